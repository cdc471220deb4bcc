"""A PACS's dermoscopy pictures segmented, a Segmentation and a Parametric Map of each stored back (`dicomweb`).

Each pass asks the DICOMweb server (QIDO-RS) for its colour pictures, retrieves each new one whole (WADO-RS),
segments it through `Segmenter.predict` as every other caller does, and stores the two objects its result renders
into the picture's study (STOW-RS). A state file records each picture done or refused by its SOP Instance UID, so
that it is handled once across passes and restarts; a network or server fault is not recorded, and the next pass
tries that picture again. What the worker prints names a picture by a short hash of its SOP Instance UID, and never
carries the patient's name, ID or accession number: a message that might quote them is redacted first.
"""

import hashlib
import io
import signal
import sqlite3
import sys
import threading
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import requests
from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from filelock import FileLock, Timeout
from pydicom import Dataset, dcmread
from tqdm import tqdm

from lesionseg.batch.to_worklist import ServiceRefused, WorklistClient
from lesionseg.config import Settings
from lesionseg.dicom.objects import to_bytes
from lesionseg.imaging.decode import ImageRejected
from lesionseg.segmenter import PredictionRequest, Segmenter

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
DERMOSCOPIC_PHOTOGRAPHY = "1.2.840.10008.5.1.4.1.1.77.1.7"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
PICTURE_SOP_CLASSES = frozenset({VL_PHOTOGRAPHIC, DERMOSCOPIC_PHOTOGRAPHY, SECONDARY_CAPTURE})
# Pictures are asked for by Modality, a series attribute that servers index (Orthanc among them): a search on the
# SOP Class UID, an instance attribute Orthanc does not index, would make it open every stored file on each pass.
# XC and DMS are what the VL Photographic and Dermoscopic Photography objects must carry; OT is what Secondary
# Capture pictures usually carry. The answers are then kept by SOP Class UID, because OT also finds other objects,
# our own Parametric Maps among them.
QUERY_MODALITIES = ("XC", "DMS", "OT")
PAGE_SIZE = 500
# What is never printed or recorded, even inside an error message from a library: asked for with each picture,
# so as to be struck out.
PATIENT_KEYWORDS = ("PatientName", "PatientID", "AccessionNumber")
# The credentials are wrong for every picture alike: the worker stops instead of failing each.
CREDENTIALS_REFUSED = (401, 403)
STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS server (url TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('done', 'refused')),
    reason TEXT NOT NULL,
    handled_at TEXT NOT NULL
);
"""


class ServerUnreachable(ValueError):
    """The server could not list its pictures: the pass is lost, not the worker."""


class CredentialsRefused(ValueError):
    """The server or the worklist refused the credentials: they are wrong for every picture alike."""


@dataclass(frozen=True)
class Picture:
    study_uid: str
    series_uid: str
    sop_uid: str
    # The patient's identifiers from the server's answer, only to strike them out of messages.
    patient: tuple[str, ...] = field(default=(), repr=False)

    @property
    def name(self) -> str:
        """What the worker calls it in print and in the state file: a short hash of its SOP Instance UID."""
        return hashlib.sha256(self.sop_uid.encode()).hexdigest()[:12]

    def redact(self, text: str) -> str:
        """`text` with the picture's UIDs replaced by its name, and its patient's identifiers struck out."""
        for uid in (self.sop_uid, self.series_uid, self.study_uid):
            text = text.replace(uid, self.name)
        for identifier in self.patient:
            text = text.replace(identifier, "[patient identifier]")
        return text


def picture_of(dataset: Dataset) -> Picture:
    """A QIDO-RS answer as a Picture, with its patient's identifiers to strike out of messages."""
    patient = {str(dataset.get(keyword) or "") for keyword in PATIENT_KEYWORDS}
    # A name is also written by its parts ("Family^Given" prints as "Given Family" too).
    patient |= {part for value in list(patient) for part in value.replace("=", "^").split("^")}
    return Picture(
        dataset.StudyInstanceUID,
        dataset.SeriesInstanceUID,
        dataset.SOPInstanceUID,
        tuple(sorted((value for value in patient if len(value) >= 3), key=len, reverse=True)),
    )


def check_credentials(error: requests.RequestException, what: str) -> None:
    response = getattr(error, "response", None)
    if response is not None and response.status_code in CREDENTIALS_REFUSED:
        raise CredentialsRefused(
            f"{what} refused the credentials ({response.status_code} {response.reason}); set "
            "LESIONSEG_DICOMWEB_USERNAME and LESIONSEG_DICOMWEB_PASSWORD, or LESIONSEG_DICOMWEB_TOKEN"
        ) from None


def search_pictures(client: DICOMwebClient, modality: str, limit: int, offset: int) -> list[dict]:
    try:
        return client.search_for_instances(
            search_filters={"Modality": modality}, fields=["SOPClassUID", *PATIENT_KEYWORDS], limit=limit, offset=offset
        )
    except requests.RequestException as error:
        check_credentials(error, "the DICOMweb server")
        raise ServerUnreachable(f"cannot list the pictures at {client.base_url}: {error}") from None


def list_pictures(client: DICOMwebClient, page_size: int = PAGE_SIZE) -> list[Picture]:
    """Every colour picture the server holds, listed whole before any is handled: the Parametric Maps stored
    meanwhile (modality OT) would otherwise move the later pages. A page is asked for until one is empty or
    brings nothing new, since a server may answer fewer than asked, or ignore the offset."""
    pictures: dict[str, Picture] = {}
    for modality in QUERY_MODALITIES:
        offset, seen = 0, set()
        while page := search_pictures(client, modality, page_size, offset):
            answers = [Dataset.from_json(answer) for answer in page]
            uids = {answer.SOPInstanceUID for answer in answers}
            if uids <= seen:
                break
            seen |= uids
            for answer in answers:
                if answer.get("SOPClassUID") in PICTURE_SOP_CLASSES:
                    pictures[answer.SOPInstanceUID] = picture_of(answer)
            offset += len(page)
    return list(pictures.values())


def check_reachable(client: DICOMwebClient) -> None:
    """One small search, so that a wrong URL or wrong credentials stop the worker before the model loads."""
    search_pictures(client, QUERY_MODALITIES[0], limit=1, offset=0)


def dicomweb_client(url: str, settings: Settings) -> DICOMwebClient:
    """A client sending the settings' credentials: a bearer token, or a user name and password."""
    token = settings.dicomweb_token.get_secret_value()
    if token and settings.dicomweb_username:
        raise ValueError("set LESIONSEG_DICOMWEB_TOKEN or LESIONSEG_DICOMWEB_USERNAME, not both")
    if token:
        return DICOMwebClient(url, headers={"Authorization": f"Bearer {token}"})
    if settings.dicomweb_username:
        session = create_session_from_user_pass(
            settings.dicomweb_username, settings.dicomweb_password.get_secret_value()
        )
        return DICOMwebClient(url, session=session)
    return DICOMwebClient(url)


class HandledInstances:
    """The state file (SQLite): each instance done or refused, by SOP Instance UID. One worker uses it at a
    time, held by a lock beside it, so that two never handle the same picture; and it belongs to one server,
    since the same pictures in another PACS still need their own outputs there."""

    def __init__(self, path: Path, server_url: str) -> None:
        self.lock = FileLock(f"{path}.lock")
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise ValueError(f"another lesionseg dicomweb is using {path}") from None
        try:
            self.connection = sqlite3.connect(path, isolation_level=None)  # each record is committed as it is made
            self.connection.executescript(STATE_SCHEMA)
        except sqlite3.Error as error:
            self.lock.release()
            raise ValueError(f"{path} cannot be used as the state file: {error}") from None
        server_url = server_url.rstrip("/")
        recorded = self.connection.execute("SELECT url FROM server").fetchone()
        if recorded is None:
            self.connection.execute("INSERT INTO server (url) VALUES (?)", (server_url,))
        elif recorded[0] != server_url:
            self.close()
            raise ValueError(f"{path} records the pictures of {recorded[0]}; give {server_url} its own --state")

    def handled(self, picture: Picture) -> bool:
        query = "SELECT 1 FROM instances WHERE sop_instance_uid = ?"
        return self.connection.execute(query, (picture.sop_uid,)).fetchone() is not None

    def record(self, picture: Picture, outcome: str, reason: str = "") -> None:
        self.connection.execute(
            "INSERT INTO instances VALUES (?, ?, ?, ?, ?)",
            (picture.sop_uid, picture.name, outcome, reason, datetime.now(UTC).isoformat(timespec="seconds")),
        )

    def close(self) -> None:
        self.connection.close()
        self.lock.release()


@dataclass(frozen=True)
class Outcome:
    status: Literal["done", "refused", "failed"]  # refused: recorded, never retried; failed: tried next pass
    reason: str = ""
    review_recommended: bool = False
    added_to_worklist: bool = False


@dataclass
class PassSummary:
    pictures: int = 0  # colour pictures the server holds
    already_handled: int = 0
    done: int = 0
    refused: int = 0
    failed: int = 0
    review_recommended: int = 0
    added_to_worklist: int = 0
    seconds: float = 0.0

    def count(self, outcome: Outcome) -> None:
        setattr(self, outcome.status, getattr(self, outcome.status) + 1)
        self.review_recommended += outcome.review_recommended
        self.added_to_worklist += outcome.added_to_worklist


def worklist_query(request: PredictionRequest) -> dict[str, str]:
    """The request as POST /cases takes it, so that the worklist's case is the picture's result here."""
    query = {"samples": str(request.samples), "seed": str(request.seed), "tta": str(request.tta).lower()}
    if request.coverage is not None:
        query["coverage"] = str(request.coverage)
    else:
        query["threshold"] = str(request.threshold)
    return query


class PacsWorker:
    def __init__(
        self,
        client: DICOMwebClient,
        segmenter: Segmenter,
        request: PredictionRequest,
        state: HandledInstances,
        worklist: WorklistClient | None = None,
    ) -> None:
        if request.seed is None:
            raise ValueError("the worker needs a fixed seed, so that a picture's outputs can be made again alike")
        self.client, self.segmenter, self.request = client, segmenter, request
        self.state, self.worklist = state, worklist

    def run_pass(self, stopping: threading.Event) -> PassSummary:
        started = time.perf_counter()
        pictures = list_pictures(self.client)
        new = [picture for picture in pictures if not self.state.handled(picture)]
        summary = PassSummary(pictures=len(pictures), already_handled=len(pictures) - len(new))
        with tqdm(total=len(new), desc="segmenting", unit="picture", disable=None, file=sys.stderr) as progress:
            for position, picture in enumerate(new, 1):
                if stopping.is_set():  # a signal: stop between pictures, never between storing and recording
                    break
                outcome = self.handle_safely(picture)
                summary.count(outcome)
                report = f"{position}/{len(new)} {picture.name} {outcome.status}: {outcome.reason}"
                tqdm.write(report, file=sys.stdout if outcome.status == "done" else sys.stderr)
                progress.update()
        summary.seconds = round(time.perf_counter() - started, 2)
        return summary

    def handle_safely(self, picture: Picture) -> Outcome:
        try:
            return self.handle(picture)
        except CredentialsRefused:
            raise
        except requests.RequestException as error:
            check_credentials(error, "the DICOMweb server")
            response = getattr(error, "response", None)
            reason = str(error) if response is None else f"the server answered {response.status_code} {response.reason}"
        except Exception as error:  # noqa: BLE001 - one picture's fault must never stop the others
            reason = f"{type(error).__name__}: {error}"
        return Outcome("failed", picture.redact(reason))

    def handle(self, picture: Picture) -> Outcome:
        # The retrieved instance as a DICOM file again, as an upload would bring it.
        data = to_bytes(self.client.retrieve_instance(picture.study_uid, picture.series_uid, picture.sop_uid))
        try:
            result = self.segmenter.predict(data, self.request)
            outputs = [result.render("dicom-seg"), result.render("dicom-pmap")]
        except ImageRejected as rejected:
            reason = picture.redact(rejected.message)
            self.state.record(picture, "refused", reason)
            return Outcome("refused", reason)
        facts = f"lesion {result.mask.mean():.1%}, uncertainty score {result.score:.3f}"
        flagged = result.review_recommended
        worklist_note = self.add_to_worklist(data, picture) if flagged and self.worklist is not None else ""
        # The worklist first: a pass that fails after it sends the picture again, which the worklist recognises;
        # one that failed after storing would store the outputs twice.
        self.store(picture, outputs)
        self.state.record(picture, "done", worklist_note)
        reason = ", ".join(filter(None, [facts, "review recommended" if flagged else "", worklist_note]))
        return Outcome("done", reason, flagged, worklist_note == "added to the worklist")

    def add_to_worklist(self, data: bytes, picture: Picture) -> str:
        """Adds a flagged picture to the review worklist unless it holds it already; what became of it, in words."""
        try:
            if self.worklist.holds(hashlib.sha256(data).hexdigest()):
                return "already in the worklist"
            self.worklist.add(data, f"{picture.name}.dcm", picture.sop_uid, worklist_query(self.request))
        except ServiceRefused as refused:
            if refused.status in CREDENTIALS_REFUSED:
                detail = f"the worklist refused the key ({refused.detail}); set LESIONSEG_API_KEY"
                raise CredentialsRefused(detail) from None
            if refused.status >= 500:
                raise  # the service's fault: the next pass tries again
            return f"not added to the worklist: {picture.redact(refused.detail)}"
        except urllib.error.URLError as error:
            raise ConnectionError(f"cannot reach the worklist at {self.worklist.url} ({error.reason})") from None
        return "added to the worklist"

    def store(self, picture: Picture, outputs: list[bytes]) -> None:
        """Both objects in one STOW-RS request, into the picture's study; an answer listing failures is a fault."""
        datasets = [dcmread(io.BytesIO(data)) for data in outputs]
        answer = self.client.store_instances(datasets, study_instance_uid=picture.study_uid)
        failed = answer.get("FailedSOPSequence") or []
        if failed:
            reasons = ", ".join(f"{item.get('FailureReason', 'no reason')}" for item in failed)
            raise RuntimeError(f"the server did not store {len(failed)} of the 2 objects (failure reasons: {reasons})")


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or Ctrl-C: the worker finishes the picture in hand, then stops."""
    stopping = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stopping.set())
    return stopping


def passes(worker: PacsWorker, interval: float, stopping: threading.Event) -> Iterator[PassSummary]:
    """A pass every `interval` seconds until `stopping` is set; a pass the server could not list is skipped."""
    while not stopping.is_set():
        try:
            yield worker.run_pass(stopping)
        except ServerUnreachable as error:
            print(f"{error}; the next pass tries again", file=sys.stderr)
        stopping.wait(interval)
