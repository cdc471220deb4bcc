"""What can be done with cases: add one from a prediction, list the worklist, read one, review it,
delete it, and expire old ones. Each operation is one transaction; the routes and `lesionseg
export-reviews` call these and nothing below them.
"""

import base64
import binascii
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
from sqlalchemy import and_, false, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, selectinload, sessionmaker

from lesionseg.imaging.regions import rle_decode, rle_encode
from lesionseg.reviews.database import DICOM_SOURCE_FIELDS, Case, Review, ReviewEvent, connect
from lesionseg.reviews.errors import (
    CaseNotFound,
    ImageMissing,
    InvalidCursor,
    InvalidMask,
    StaleReview,
    UnconfirmedOutOfDistribution,
)
from lesionseg.reviews.storage import DEFAULT_ORPHAN_GRACE_SECONDS, ImageStore
from lesionseg.segmenter import PredictionRequest, Result

WorklistOrder = Literal["uncertainty", "newest"]


def now() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time stored here is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def dicom_columns(result: Result) -> dict[str, str | None]:
    """The case's DICOM columns: its source's identifiers for a DICOM upload, none for a picture file."""
    if result.decoded.dicom is None:
        return {}
    from lesionseg.imaging.dicom import DicomIdentifiers  # pydicom, loaded by the DICOM upload already

    return {f"dicom_{name}": value for name, value in DicomIdentifiers.of(result.decoded.dicom).as_json().items()}


def describe(case: Case, include_masks: bool = True) -> dict:
    """A case as the API returns it."""
    review = case.review
    body = {
        "id": case.id,
        "created_at": aware(case.created_at).isoformat(),
        "image": {
            "sha256": case.image_sha256,
            "bytes": case.image_bytes,
            "media_type": case.image_media_type,
            "width": case.width,
            "height": case.height,
            "filename": case.filename,
        },
        "external_id": case.external_id,
        # Where the case came from, in one place: the upload's file name, the caller's own identifier and, for a
        # DICOM upload, its patient, study, series and instance.
        "source": {"filename": case.filename, "external_id": case.external_id, "dicom": dicom_source(case)},
        "model": {"name": case.model_name, "version": case.model_version, "sha256": case.model_sha256},
        "settings": {
            "samples": case.samples,
            "seed": case.seed,
            "threshold": case.threshold,
            "coverage": case.coverage,
            "tta": case.tta,
        },
        "uncertainty_score": case.uncertainty_score,
        "review_recommended": case.review_recommended,
        "out_of_distribution": case.out_of_distribution,
        "ood_score": case.ood_score,
        "review": {
            "status": review.status,
            "version": review.version,
            "reviewer": review.reviewer_key_id,
            "updated_at": aware(review.updated_at).isoformat(),
            "out_of_distribution_confirmed": review.out_of_distribution_confirmed,
        },
    }
    if include_masks:
        body["mask_rle"] = case.mask_rle
        body["review"]["mask_rle"] = review.corrected_mask_rle
    return body


def dicom_source(case: Case) -> dict[str, str | None] | None:
    """A DICOM case's identifiers, None for a picture file's (which has none of them)."""
    source = {name: getattr(case, f"dicom_{name}") for name in DICOM_SOURCE_FIELDS}
    return source if any(source.values()) else None


def describe_event(event: ReviewEvent) -> dict:
    return {
        "version": event.version,
        "status": event.status,
        "reviewer": event.reviewer_key_id,
        "at": aware(event.created_at).isoformat(),
        "mask_rle": event.corrected_mask_rle,
    }


def current_mask(case: Case, source: Literal["current", "model"] = "current") -> np.ndarray:
    """`current`: the reviewer's correction if there is one, else the model's mask."""
    corrected = case.review.corrected_mask_rle if case.review.status == "corrected" else None
    return rle_decode(corrected if corrected and source == "current" else case.mask_rle)


def check_mask(mask_rle: dict, height: int, width: int) -> None:
    """A client's RLE must describe a mask of exactly the case's size; InvalidMask says what is wrong."""
    size, counts = mask_rle.get("size"), mask_rle.get("counts")
    if list(size or []) != [height, width]:
        raise InvalidMask(f"the mask's size is {size}; this case's image is [height, width] = [{height}, {width}]")
    if not isinstance(counts, list) or any(not isinstance(count, int) or count < 0 for count in counts):
        raise InvalidMask("the mask's counts must be a list of non-negative integers (COCO's uncompressed RLE)")
    if sum(counts) != height * width:
        raise InvalidMask(f"the mask's counts add up to {sum(counts)} pixels, not {height} × {width}")


def encode_cursor(values: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


def decode_cursor(cursor: str, types: tuple[type, ...]) -> list:
    """The values `encode_cursor` packed, each of the type expected; InvalidCursor for anything else."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as error:
        raise InvalidCursor() from error
    if not isinstance(values, list) or len(values) != len(types):
        raise InvalidCursor()
    if any(type(value) is not kind for value, kind in zip(values, types, strict=True)):
        raise InvalidCursor()
    # A NUL cannot be stored in a PostgreSQL text, nor a NaN compared: neither came from us.
    if any((isinstance(value, str) and "\x00" in value) or value != value for value in values):
        raise InvalidCursor()
    return values


class CaseStore:
    def __init__(self, engine: Engine, images: ImageStore, retention_days: float | None = None) -> None:
        self.engine = engine
        self.images = images
        self.retention_days = retention_days
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(
        cls,
        database_url: str,
        storage_directory: Path,
        retention_days: float | None = None,
        min_free_bytes: int = 0,
    ) -> "CaseStore":
        """The store on a database migrated to the current schema."""
        return cls(connect(database_url), ImageStore(storage_directory, min_free_bytes), retention_days)

    def clean_up(self, orphan_grace_seconds: float = DEFAULT_ORPHAN_GRACE_SECONDS) -> None:
        """Removes what the retention period or a crash left behind: old cases, and images no case names
        that are older than the grace period. Safe beside other workers already serving: under the images'
        cross-process lock, no case is between storing its image and being committed."""
        self.expire_old_cases()
        with self.images.lock:
            with self.sessions() as session:
                referenced = set(session.scalars(select(Case.image_sha256).distinct()))
            self.images.remove_orphans(referenced, orphan_grace_seconds)

    def close(self) -> None:
        self.engine.dispose()

    def add(
        self,
        data: bytes,
        media_type: str,
        result: Result,
        request: PredictionRequest,
        filename: str | None = None,
        external_id: str | None = None,
    ) -> dict:
        """Keeps the image and the model's result as a pending case, with how it was asked for: the seed
        and threshold the prediction used (a drawn seed, a coverage's threshold), the rest as requested;
        and where it came from: the upload's file name and the caller's own identifier, if given."""
        created = now()
        case = Case(
            id=uuid.uuid4().hex,
            created_at=created,
            image_sha256="",
            image_bytes=len(data),
            image_media_type=media_type,
            width=result.width,
            height=result.height,
            model_name=result.model["name"],
            model_version=result.model["version"],
            model_sha256=result.model["sha256"],
            samples=request.samples,
            seed=result.prediction.seed,
            threshold=result.prediction.threshold,
            coverage=request.coverage,
            tta=request.tta,
            uncertainty_score=result.score,
            review_recommended=result.review_recommended,
            out_of_distribution=result.out_of_distribution,
            ood_score=result.ood_score,
            mask_rle=rle_encode(result.mask),
            filename=filename,
            external_id=external_id,
            **dicom_columns(result),
        )
        case.review = Review(status="pending", version=1, created_at=created, updated_at=created)
        case.events = [ReviewEvent(version=1, status="pending", created_at=created)]
        with self.images.lock:  # never between another process's delete of this image and its check
            case.image_sha256 = self.images.put(data)  # on disk before the case that names it
            with self.sessions.begin() as session:
                session.add(case)
        return describe(case)

    def counts(self) -> dict[str, int]:
        """How many cases have each status, every status named (0 where none)."""
        with self.sessions() as session:
            rows = session.execute(select(Review.status, func.count()).group_by(Review.status)).all()
        return {"pending": 0, "accepted": 0, "corrected": 0, "rejected": 0} | {status: count for status, count in rows}

    def worklist(
        self,
        status: str | None,
        order: WorklistOrder,
        limit: int,
        cursor: str | None,
        image_sha256: str | None = None,
    ) -> tuple[list[dict], str | None]:
        """One page of cases, and the cursor of the next page (None at the end). `uncertainty`: cases
        recommended for review first, then the most uncertain; `newest`: the latest uploads first.
        `image_sha256`: only the cases of that image (how `lesionseg add-cases` knows what is there)."""
        query = select(Case).join(Case.review).options(selectinload(Case.review))
        if status is not None:
            query = query.where(Review.status == status)
        if image_sha256 is not None:
            query = query.where(Case.image_sha256 == image_sha256)
        if order == "uncertainty":
            query = query.order_by(Case.review_recommended.desc(), Case.uncertainty_score.desc(), Case.id)
            if cursor:
                flagged, score, last_id = decode_cursor(cursor, (bool, float, str))
                # Flagged cases come first: after a flagged one, every unflagged case is still to come.
                later_group = Case.review_recommended.is_(False) if flagged else false()
                same_group = Case.review_recommended.is_(flagged)
                query = query.where(
                    or_(
                        later_group,
                        and_(same_group, Case.uncertainty_score < score),
                        and_(same_group, Case.uncertainty_score == score, Case.id > last_id),
                    )
                )
        else:
            query = query.order_by(Case.created_at.desc(), Case.id)
            if cursor:
                created, last_id = decode_cursor(cursor, (str, str))
                try:
                    created = datetime.fromisoformat(created)
                except ValueError as error:
                    raise InvalidCursor() from error
                query = query.where(or_(Case.created_at < created, and_(Case.created_at == created, Case.id > last_id)))
        with self.sessions() as session:
            # A case deleted between the two SELECTs (cases, then their reviews) has no review: it is gone.
            cases = [case for case in session.scalars(query.limit(limit + 1)) if case.review is not None]
        page = [describe(case, include_masks=False) for case in cases[:limit]]
        if len(cases) <= limit:
            return page, None
        last = cases[limit - 1]
        if order == "uncertainty":
            return page, encode_cursor([last.review_recommended, last.uncertainty_score, last.id])
        return page, encode_cursor([aware(last.created_at).isoformat(), last.id])

    def find(self, session: Session, case_id: str) -> Case:
        case = session.get(Case, case_id, options=[selectinload(Case.review)])
        # Without its review, the case was deleted between the two SELECTs that load it.
        if case is None or case.review is None:
            raise CaseNotFound(case_id)
        return case

    def get(self, case_id: str) -> dict:
        with self.sessions() as session:
            return describe(self.find(session, case_id))

    def image(self, case_id: str) -> tuple[bytes, str]:
        with self.sessions() as session:
            case = self.find(session, case_id)
            sha256, media_type = case.image_sha256, case.image_media_type
        try:
            return self.images.get(sha256), media_type
        except FileNotFoundError:
            self.get(case_id)  # deleted meanwhile: CaseNotFound
            raise ImageMissing(case_id) from None

    def mask(self, case_id: str, source: Literal["current", "model"] = "current") -> np.ndarray:
        with self.sessions() as session:
            return current_mask(self.find(session, case_id), source)

    def review(
        self,
        case_id: str,
        status: str,
        mask_rle: dict | None,
        version: int,
        reviewer_key_id: str | None,
        confirm_out_of_distribution: bool = False,
    ) -> dict:
        """Sets the verdict if `version` is still the review's version; StaleReview otherwise. Accepting or
        correcting a case the gate flagged needs `confirm_out_of_distribution`: those verdicts send it to training."""
        if (status == "corrected") != (mask_rle is not None):
            raise InvalidMask("a corrected mask comes with status 'corrected', and 'corrected' needs one")
        with self.sessions.begin() as session:
            case = self.find(session, case_id)
            if case.out_of_distribution and status in ("accepted", "corrected") and not confirm_out_of_distribution:
                raise UnconfirmedOutOfDistribution(status)
            if mask_rle is not None:
                check_mask(mask_rle, case.height, case.width)
            changed = session.execute(
                update(Review)
                .where(Review.case_id == case_id, Review.version == version)
                .values(
                    status=status,
                    corrected_mask_rle=mask_rle,
                    reviewer_key_id=reviewer_key_id,
                    updated_at=now(),
                    version=Review.version + 1,
                    # Only a verdict that sends the case to training confirms anything; any later one clears it.
                    out_of_distribution_confirmed=bool(
                        case.out_of_distribution and status in ("accepted", "corrected") and confirm_out_of_distribution
                    ),
                )
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount != 1:
                current = session.scalar(select(Review.version).where(Review.case_id == case_id))
                if current is None:  # deleted since it was found
                    raise CaseNotFound(case_id)
                raise StaleReview(version, current)
            # In the same transaction as the verdict: the trail has every verdict the case had, and no other.
            session.add(
                ReviewEvent(
                    case_id=case_id,
                    version=version + 1,
                    status=status,
                    corrected_mask_rle=mask_rle,
                    reviewer_key_id=reviewer_key_id,
                    created_at=now(),
                )
            )
        return self.get(case_id)

    def history(self, case_id: str) -> list[dict]:
        """Every verdict the case has had, oldest first (from 0002 on: an older case starts with the verdict
        it had when the database was upgraded)."""
        with self.sessions() as session:
            self.find(session, case_id)
            events = session.scalars(
                select(ReviewEvent).where(ReviewEvent.case_id == case_id).order_by(ReviewEvent.version)
            )
            return [describe_event(event) for event in events]

    def delete(self, case_id: str) -> None:
        with self.images.lock:
            with self.sessions.begin() as session:
                case = self.find(session, case_id)
                sha256 = case.image_sha256
                session.delete(case)
            self.delete_image_if_unused(sha256)

    def delete_image_if_unused(self, sha256: str) -> None:
        with self.sessions() as session:
            others = session.scalar(select(func.count()).select_from(Case).where(Case.image_sha256 == sha256))
        if not others:
            self.images.delete(sha256)

    def expire_old_cases(self) -> int:
        """Deletes cases (and then their images) older than the retention period; returns how many."""
        if self.retention_days is None:
            return 0
        cutoff = now() - timedelta(days=self.retention_days)
        with self.images.lock:
            with self.sessions.begin() as session:
                old = list(session.scalars(select(Case).where(Case.created_at < cutoff)))
                images = {case.image_sha256 for case in old}
                for case in old:
                    session.delete(case)
            for sha256 in images:
                self.delete_image_if_unused(sha256)
        return len(old)

    def reviewed(self) -> Iterator[tuple[dict, bytes | None, np.ndarray | None]]:
        """Accepted and corrected cases, oldest first: (the case, its image, the mask a person approved). A
        case whose image file is missing comes with None for both, for the caller to report and skip; one
        deleted meanwhile is left out."""
        query = (
            select(Case.id)
            .join(Case.review)
            .where(Review.status.in_(("accepted", "corrected")))
            .order_by(Case.created_at, Case.id)
        )
        with self.sessions() as session:
            identifiers = list(session.scalars(query))
        for case_id in identifiers:
            try:
                with self.sessions() as session:
                    case = self.find(session, case_id)
                    described, image_sha256, mask = describe(case), case.image_sha256, current_mask(case)
            except CaseNotFound:
                continue
            try:
                image = self.images.get(image_sha256)
            except FileNotFoundError:
                yield described, None, None
                continue
            yield described, image, mask
