"""The worklist with several processes, as `--workers N`, Ray Serve replicas and rolling restarts run it, on
SQLite and PostgreSQL: start-up migrations that do not collide, images that no process deletes under
another's case, a sweep that spares what is in flight, and a case deleted under a reader answering 404."""

import multiprocessing
import random
import signal
import threading

import cv2
import httpx
import pytest
from sqlalchemy import create_engine, inspect, select, text
from tests.reviews.conftest import DATABASES, new_database_url
from tests.reviews.test_cases_http import Service

from lesionseg.reviews.database import Case, connect
from lesionseg.reviews.storage import ImageStore

# Slow tier (`make test-fast` leaves it out): each test talks to a real server process over HTTP.
pytestmark = pytest.mark.slow


def connect_and_close(url: str) -> None:
    connect(url).dispose()


@pytest.mark.parametrize("kind", DATABASES)
def test_processes_migrating_one_empty_database_at_once_all_succeed(kind, request, tmp_path):
    url = new_database_url(kind, request, tmp_path)
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        pool.map(connect_and_close, [url] * 4)  # an exception in any process fails the test
    engine = create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == ["0005"]
    assert {"cases", "reviews"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def distinct_photos(real_image_path, count: int) -> list[bytes]:
    photo = cv2.imread(str(real_image_path))
    photos = []
    for index in range(count):
        varied = photo.copy()
        varied[0, 0] = (index, 7, 7)
        photos.append(cv2.imencode(".png", varied)[1].tobytes())
    return photos


def referenced_images(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        names = set(connection.execute(select(Case.image_sha256)).scalars())
    engine.dispose()
    return names


@pytest.mark.parametrize("kind", DATABASES)
def test_two_workers_adding_and_deleting_cases_that_share_images_through_a_restart_lose_no_image(
    kind, request, tmp_path, real_image_path
):
    """Two workers on an empty database (both migrate as they start), four clients adding cases of three
    shared photos and deleting them again, and a SIGHUP that restarts both workers (each sweeps) in the
    middle. No answer is a 5xx; afterwards every case's image is there, and once the grace period has
    passed (a restart with it set to 0) no image is left that no case names."""
    database_url = new_database_url(kind, request, tmp_path)
    service = Service(database_url, tmp_path / "images", arguments=("--workers", "2")).start()
    photos = distinct_photos(real_image_path, 3)
    statuses: list[int] = []
    restart = threading.Event()

    def client(seed: int) -> None:
        generator = random.Random(seed)
        mine: list[str] = []
        for step in range(24):
            if step == 8 and seed == 0:
                restart.set()
            try:
                if mine and generator.random() < 0.45:
                    response = service.delete(mine.pop(generator.randrange(len(mine))))
                else:
                    response = service.upload(photos[generator.randrange(3)], samples=1)
                    if response.status_code == 201:
                        mine.append(response.json()["id"])
                statuses.append(response.status_code)
            except httpx.TransportError:
                statuses.append(0)  # a connection cut by the restart: the client may retry, no harm done

    clients = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
    for thread in clients:
        thread.start()
    restart.wait(timeout=600)
    service.server.process.send_signal(signal.SIGHUP)
    for thread in clients:
        thread.join()
    try:
        assert not [status for status in statuses if status >= 500], statuses
        assert statuses.count(201) >= 20 and statuses.count(204) >= 5, statuses
        cases = service.get("/cases", limit=200).json()["cases"]
        for case in cases:
            assert service.get(f"/cases/{case['id']}/image").status_code == 200, case["id"]
        assert {case["image"]["sha256"] for case in cases} <= service.stored_images()
    finally:
        service.stop()
    assert referenced_images(database_url) <= service.stored_images()
    service.start(orphan_grace_seconds="0")
    try:
        assert service.stored_images() == referenced_images(database_url)
    finally:
        service.stop()


def test_the_sweep_spares_an_image_younger_than_the_grace_period(tmp_path, real_image_path):
    """An image on disk that no case names yet (another worker is about to commit it) survives a start-up."""
    store = ImageStore(tmp_path / "images")
    fresh = store.put(real_image_path.read_bytes())
    service = Service(f"sqlite:///{tmp_path / 'cases.db'}", tmp_path / "images").start()
    service.stop()
    assert fresh in service.stored_images()


@pytest.mark.parametrize("kind", DATABASES)
def test_a_case_deleted_under_its_readers_answers_404_never_500(kind, request, tmp_path, real_image_path):
    service = Service(new_database_url(kind, request, tmp_path), tmp_path / "images").start()
    try:
        photos = distinct_photos(real_image_path, 6)
        identifiers = [service.upload(photo, samples=1).json()["id"] for photo in photos]
        statuses: list[int] = []

        def read(case_id: str) -> None:
            for path in ("", "/image", "/mask"):
                statuses.append(service.get(f"/cases/{case_id}{path}").status_code)
            statuses.append(service.review(case_id, {"status": "accepted", "version": 1}).status_code)
            statuses.append(service.get("/cases", limit=50).status_code)

        for case_id in identifiers:
            readers = [threading.Thread(target=read, args=(case_id,)) for _ in range(3)]
            for reader in readers:
                reader.start()
            statuses.append(service.delete(case_id).status_code)
            for reader in readers:
                reader.join()
        assert set(statuses) <= {200, 204, 404, 409}, statuses
        assert statuses.count(404) > 0
    finally:
        service.stop()
