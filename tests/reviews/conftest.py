"""Real databases for the review worklist: an SQLite file, and a PostgreSQL server of its own, started
with initdb and pg_ctl in a temporary folder and stopped afterwards (Debian's `postgresql` package;
`make test` installs it)."""

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from tests.conftest import free_port

DATABASES = ["sqlite", "postgresql"]


def postgres_program(name: str) -> str | None:
    found = shutil.which(name)
    return found or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)


def as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; as root, run it as the `postgres` account Debian creates."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a fresh PostgreSQL server (trust authentication, on 127.0.0.1 only)."""
    initdb, pg_ctl = postgres_program("initdb"), postgres_program("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.fail("PostgreSQL is not installed: `make test` installs it (apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="psycopg is not installed: `make test` installs it")
    folder = Path(tempfile.mkdtemp(prefix="lesionseg-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        as_postgres_user([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off"
    subprocess.run(
        as_postgres_user([pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(as_postgres_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def new_database_url(kind: str, request, tmp_path: Path) -> str:
    """An empty database of `kind`."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'cases.db'}"
    import psycopg

    server = request.getfixturevalue("postgres_server")
    name = f"cases_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


@pytest.fixture(params=DATABASES)
def database_url(request, tmp_path) -> str:
    return new_database_url(request.param, request, tmp_path)
