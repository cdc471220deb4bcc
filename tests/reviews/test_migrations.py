"""A database made by an older release is upgraded in place, its cases kept: SQLite here (the same Alembic
scripts run on PostgreSQL in tests/reviews/test_cases_http.py)."""

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from lesionseg.reviews.cases import CaseStore

CASE_0001 = {
    "id": "a" * 32,
    "created_at": "2026-11-28 10:00:00",
    "image_sha256": "b" * 64,
    "image_bytes": 10,
    "image_media_type": "image/jpeg",
    "width": 4,
    "height": 3,
    "model_name": "efficientnet_lite0_upernet",
    "model_version": "0.5.0",
    "model_sha256": "c" * 64,
    "samples": 10,
    "seed": 0,
    "threshold": 0.5,
    "tta": False,
    "uncertainty_score": 0.1,
    "review_recommended": False,
    "mask_rle": '{"size": [3, 4], "counts": [12]}',
}


def test_a_0001_database_keeps_its_cases_and_starts_their_history_with_their_verdict(tmp_path):
    url = f"sqlite:///{tmp_path / 'cases.db'}"
    config = Config()
    config.set_main_option("script_location", str(resources.files("lesionseg.reviews") / "migrations"))
    engine = create_engine(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        columns = ", ".join(CASE_0001)
        connection.execute(text(f"INSERT INTO cases ({columns}) VALUES (:{', :'.join(CASE_0001)})"), CASE_0001)
        connection.execute(
            text(
                "INSERT INTO reviews (case_id, status, reviewer_key_id, created_at, updated_at, version) "
                "VALUES (:id, 'accepted', 'someone', '2026-11-28 10:00:00', '2026-11-29 09:00:00', 2)"
            ),
            {"id": CASE_0001["id"]},
        )
    engine.dispose()
    store = CaseStore.open(url, tmp_path / "images")  # the service's own start: upgrades to the current schema
    try:
        case = store.get(CASE_0001["id"])
        assert case["review"]["status"] == "accepted" and case["external_id"] is None
        assert case["image"]["filename"] is None
        (event,) = store.history(CASE_0001["id"])
        assert (event["version"], event["status"], event["reviewer"]) == (2, "accepted", "someone")
        assert event["at"].startswith("2026-11-29T09:00:00")
    finally:
        store.close()
