"""The tables, and the engine that reaches them: SQLite (a file) by default, PostgreSQL by URL.

Alembic owns the schema (`migrations/`): `connect` upgrades any database, empty or older, to the
current revision before the service uses it. Every worker of a service does this as it starts, so the
upgrade runs under a lock that all of them share: PostgreSQL's advisory lock, or a file lock beside an
SQLite file. The first worker migrates; the others wait, then find the schema current.
"""

from contextlib import nullcontext
from datetime import datetime
from importlib import resources

from alembic import command
from alembic.config import Config
from filelock import FileLock
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    create_engine,
    event,
    false,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

REVIEW_STATUSES = ("pending", "accepted", "corrected", "rejected")


class Base(DeclarativeBase):
    pass


# A DICOM case's source, each kept in the column `dicom_` + its name (0005), as `imaging.dicom.DicomIdentifiers`
# names them.
DICOM_SOURCE_FIELDS = (
    "patient_id",
    "accession_number",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
)


class Case(Base):
    """One uploaded image and what the model said of it."""

    __tablename__ = "cases"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    image_bytes: Mapped[int] = mapped_column(Integer)
    image_media_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(32))
    model_sha256: Mapped[str] = mapped_column(String(64))
    samples: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    threshold: Mapped[float] = mapped_column(Float)
    coverage: Mapped[float | None] = mapped_column(Float, nullable=True)
    tta: Mapped[bool] = mapped_column(Boolean)
    uncertainty_score: Mapped[float] = mapped_column(Float, index=True)
    review_recommended: Mapped[bool] = mapped_column(Boolean)
    out_of_distribution: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    ood_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    mask_rle: Mapped[dict] = mapped_column(JSON)
    # Where the picture came from, so that a researcher can map a case back to their records (0002).
    filename: Mapped[str | None] = mapped_column(String(255), nullable=True)
    external_id: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    # A DICOM upload's source: its patient, study, series and instance (0005); shown only to those who may read
    # cases, never logged.
    dicom_patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dicom_accession_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dicom_study_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dicom_series_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    dicom_sop_instance_uid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    review: Mapped["Review"] = relationship(back_populates="case", cascade="all, delete-orphan", uselist=False)
    events: Mapped[list["ReviewEvent"]] = relationship(cascade="all, delete-orphan", order_by="ReviewEvent.version")


class Review(Base):
    """A person's verdict on one case. `version` rises with every change: a change that names an older
    version was made without seeing the latest one, and is refused."""

    __tablename__ = "reviews"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    corrected_mask_rle: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    reviewer_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer)
    # The gate flagged the case and the reviewer who accepted or corrected it confirmed it is dermoscopy.
    out_of_distribution_confirmed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    case: Mapped[Case] = relationship(back_populates="review")


class ReviewEvent(Base):
    """Every verdict a case has had, in order: the audit trail. `Review` holds only the latest (0002)."""

    __tablename__ = "review_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    corrected_mask_rle: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    reviewer_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def connect(url: str) -> Engine:
    """An engine on `url`, its schema migrated to the current revision."""
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", configure_sqlite)
    migrate(engine)
    return engine


def configure_sqlite(connection, _record) -> None:
    """Write-ahead logging lets readers and one writer work at once; a writer waits for another rather
    than failing at once; SQLite enforces foreign keys only when asked."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# Any fixed 64-bit number names the advisory lock; this one spells "lesionsg" in ASCII.
MIGRATION_LOCK_KEY = int.from_bytes(b"lesionsg", "big") - 2**63


def sqlite_file_lock(engine: Engine) -> FileLock | nullcontext:
    """A lock beside an SQLite file, held outside the migration's transaction, so that it is released only
    after the commit; nothing for other databases, or for an in-memory one no other process can see."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return FileLock(f"{database}.migration-lock")
    return nullcontext()


def migrate(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(resources.files("lesionseg.reviews") / "migrations"))
    with sqlite_file_lock(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Held until this transaction ends, after the upgrade has been committed.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
