"""Reviewed cases back into training: the layout `lesionseg train --data-root` reads.

    OUT/images/ID.jpg                 the image, upright (EXIF applied), JPEG quality 95
    OUT/masks/ID_segmentation.png     the mask a person approved: the model's if accepted, theirs if corrected
    OUT/segmentations/ID.dcm          a DICOM case's approved mask as a DICOM Segmentation of its source picture,
                                      the verdict in its content description
    OUT/manifest.csv                  who reviewed what, with which model

Then `lesionseg train --data-root PARENT_OF_OUT --sets NAME_OF_OUT`.

An export is a snapshot: written whole into a fresh folder beside OUT, then exchanged with OUT in one
rename, so a reader (or a training run) never sees half of one, OUT is never missing, even if the export is
killed, and nothing of an earlier export survives into it (a case rejected since is gone). It refuses an OUT
that is not empty unless asked to replace it, one that is a symbolic link, and one whose replacement would
delete what is not an export: the worklist's database, its image storage, the folder either lives in, the
working folder, `/` or a home folder. A case whose image is missing or unreadable is skipped and reported,
never the end of the export. A case the gate called "not dermoscopy" goes in when the reviewer who accepted or
corrected it confirmed it is dermoscopy; unconfirmed ones (verdicts from before confirmations were recorded)
stay out unless asked for.
"""

import csv
import ctypes
import errno
import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock
from PIL import Image

from lesionseg.config import Settings
from lesionseg.files import spreadsheet_safe
from lesionseg.imaging.decode import ImageRejected, decode_upload
from lesionseg.imaging.render import encode_mask_png
from lesionseg.reviews.cases import CaseStore

MANIFEST_FIELDS = [
    "id",
    "status",
    "reviewer",
    "reviewed_at",
    "uploaded_at",
    "image_sha256",
    "width",
    "height",
    "model_name",
    "model_version",
    "model_sha256",
    "uncertainty_score",
    "out_of_distribution",
    "out_of_distribution_confirmed",
    "filename",
    "external_id",
    "dicom_sop_instance_uid",
    "history",
]


class ExportRefused(ValueError):
    """OUT cannot be written as asked; the message says why and what to do."""


@dataclass
class ExportSummary:
    written: int = 0
    # (case id, why) for each reviewed case that could not be exported.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    left_out_of_distribution: int = 0


def protected_folders(store: CaseStore) -> list[Path]:
    """Folders an export must never be, nor hold: replacing it would delete the worklist or a person's files."""
    folders = [Path("/"), Path.home(), Path.cwd(), store.images.directory, store.images.directory.parent]
    database = store.engine.url.database
    if store.engine.dialect.name == "sqlite" and database and database != ":memory:":
        folders += [Path(database), Path(database).parent]
    # Every person's home folder, not only the one running the export (a service account exporting to /home/x).
    folders += [Path(line.split(":")[5]) for line in read_passwd() if line.count(":") >= 6]
    return [folder.resolve() for folder in folders]


def read_passwd() -> list[str]:
    try:
        return Path("/etc/passwd").read_text(errors="replace").splitlines()
    except OSError:
        return []


def check_destination(output: Path, replace: bool, protected: list[Path] = (), storage: Path | None = None) -> None:
    if output.is_symlink():
        raise ExportRefused(f"{output} is a symbolic link; give a real folder")
    if output.exists() and not output.is_dir():
        raise ExportRefused(f"{output} exists and is not a folder")
    resolved = output.resolve()
    for folder in protected:
        # Home folders such as /nonexistent or / for system accounts: only / itself is refused for them.
        if resolved == folder or (folder != Path("/") and folder.is_relative_to(resolved)):
            raise ExportRefused(
                f"{output} is or holds {folder}, which an export must never replace "
                "(the worklist's database or images, a working or home folder); give a new folder of its own"
            )
    if storage is not None and resolved.is_relative_to(storage.resolve()):
        raise ExportRefused(f"{output} is inside the worklist's image storage {storage}; give a folder outside it")
    if output.is_dir() and any(output.iterdir()) and not replace:
        raise ExportRefused(f"{output} is not empty; give --replace to swap it for a new export whole")


def export_reviews(
    store: CaseStore,
    output: Path,
    settings: Settings | None = None,
    replace: bool = False,
    include_out_of_distribution: bool = False,
) -> ExportSummary:
    """Writes every accepted or corrected case into a new snapshot at `output`."""
    settings = settings or Settings()
    output = Path(output).absolute()
    protected = protected_folders(store)
    check_destination(output, replace, protected, store.images.directory)
    output.parent.mkdir(parents=True, exist_ok=True)
    # One export of OUT at a time: the sweep below must not take another export's staging folder.
    with FileLock(output.parent / f".{output.name}.export-lock"):
        sweep_stale_staging(output)
        # Again: the sweep may have put a parked export back into OUT.
        check_destination(output, replace, protected, store.images.directory)
        staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.partial-"))
        try:
            summary = write_snapshot(store, staging, settings, include_out_of_distribution)
            swap_into_place(staging, output)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return summary


def sweep_stale_staging(output: Path) -> None:
    """What a killed export left beside OUT: its half-written snapshot, and (from the two-rename fallback) the
    earlier export parked aside, which goes back to OUT if OUT is missing."""
    for previous in sorted(output.parent.glob(f".{output.name}.previous-*")):
        parked = previous / "export"
        if not output.exists() and parked.is_dir():
            os.rename(parked, output)
        shutil.rmtree(previous, ignore_errors=True)
    for partial in output.parent.glob(f".{output.name}.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)


# renameat2(2) flags and the "current folder" descriptor, from <fcntl.h> and <linux/fs.h>.
AT_FDCWD = -100
RENAME_EXCHANGE = 2


def exchange(first: Path, second: Path) -> bool:
    """Swaps two paths in one step (Linux 3.15+, on file systems that support it); False where it cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    result = renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"cannot swap the new export into {second}: {os.strerror(code)}")


def swap_into_place(staging: Path, output: Path) -> None:
    """`staging` becomes `output`; an earlier `output` (already checked) is removed once it has been moved."""
    if not output.exists():
        os.rename(staging, output)
        return
    if exchange(staging, output):
        shutil.rmtree(staging, ignore_errors=True)  # now the earlier export
        return
    # Two renames: a kill between them leaves OUT missing, and the next export's sweep puts it back.
    previous = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.previous-"))
    os.rename(output, previous / "export")
    os.rename(staging, output)
    shutil.rmtree(previous, ignore_errors=True)


def history_text(events: list[dict]) -> str:
    """Every verdict in one cell, oldest first: "version status reviewer time", separated by semicolons."""
    return "; ".join(
        f"{event['version']} {event['status']} {event['reviewer'] or '-'} {event['at']}" for event in events
    )


def verdict(case: dict) -> str:
    """The reviewer's verdict in a few words, for a Segmentation's content description (64 characters)."""
    review = case["review"]
    who = review["reviewer"] or "a reviewer"
    return f"{review['status']} by {who}, review version {review['version']}"


def reviewed_segmentation(case: dict, source, mask) -> bytes:
    """The mask a person approved as a DICOM Segmentation of the case's source picture."""
    from lesionseg.dicom import objects  # highdicom, for DICOM cases only

    settings = case["settings"]
    parameters = {"threshold": f"{settings['threshold']:.6g}", "reviewed": case["review"]["status"]}
    if settings["coverage"] is not None:
        parameters["coverage"] = f"{settings['coverage']:.6g}"
    return objects.to_bytes(objects.segmentation(source, mask, case["model"], parameters, verdict(case)))


def write_snapshot(
    store: CaseStore, folder: Path, settings: Settings, include_out_of_distribution: bool
) -> ExportSummary:
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    summary, rows = ExportSummary(), []
    for case, data, mask in store.reviewed():
        confirmed = case["review"]["out_of_distribution_confirmed"]
        if case["out_of_distribution"] and not confirmed and not include_out_of_distribution:
            summary.left_out_of_distribution += 1
            continue
        if data is None:
            summary.skipped.append((case["id"], "its image is missing from the storage folder"))
            continue
        try:
            decoded = decode_upload(data, settings.max_pixels, settings.min_side, None)
        except ImageRejected as error:
            summary.skipped.append((case["id"], f"its image cannot be read: {error.message}"))
            continue
        buffer = io.BytesIO()
        Image.fromarray(decoded.rgb).save(buffer, format="JPEG", quality=95)
        (folder / "images" / f"{case['id']}.jpg").write_bytes(buffer.getvalue())
        (folder / "masks" / f"{case['id']}_segmentation.png").write_bytes(encode_mask_png(mask))
        if decoded.dicom is not None:
            segmentations = folder / "segmentations"
            segmentations.mkdir(exist_ok=True)
            (segmentations / f"{case['id']}.dcm").write_bytes(reviewed_segmentation(case, decoded.dicom, mask))
        review, model = case["review"], case["model"]
        rows.append(
            {
                "id": case["id"],
                "status": review["status"],
                "reviewer": review["reviewer"] or "",
                "reviewed_at": review["updated_at"],
                "uploaded_at": case["created_at"],
                "image_sha256": case["image"]["sha256"],
                "width": case["image"]["width"],
                "height": case["image"]["height"],
                "model_name": model["name"],
                "model_version": model["version"],
                "model_sha256": model["sha256"],
                "uncertainty_score": case["uncertainty_score"],
                "out_of_distribution": case["out_of_distribution"],
                "out_of_distribution_confirmed": confirmed,
                "filename": case["image"]["filename"],
                "external_id": case["external_id"],
                # The source picture's instance, for finding it in the PACS; the patient's identifiers stay out.
                "dicom_sop_instance_uid": (case["source"]["dicom"] or {}).get("sop_instance_uid"),
                "history": history_text(store.history(case["id"])),
            }
        )
    with open(folder / "manifest.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(spreadsheet_safe(row) for row in rows)
    summary.written = len(rows)
    return summary
