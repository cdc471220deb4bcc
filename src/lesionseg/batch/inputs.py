"""What a batch job reads: the images of a folder, or the paths listed in a manifest CSV.

An identifier names an image's output files, so it must be one safe file-name component: never a path
that leads out of the output folder, never so long the file system refuses it, never equal to another
image's once Unicode forms and letter case are set aside (macOS and Windows file systems ignore both).
An input that breaks these rules is not processed: it becomes a failed row saying why.
"""

import csv
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from lesionseg.imaging.containers import DICOM_PREAMBLE_BYTES, DICOM_PREFIX, is_dicom

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".dcm", ".dicom"}
MAX_IDENTIFIER_CHARACTERS = 128
# File systems allow 255 bytes in a name; the outputs add up to 26 (".", "_segmentation.png", ".partial").
MAX_IDENTIFIER_BYTES = 200
# What a results row keeps of an identifier or path that was refused.
MAX_SHOWN_CHARACTERS = 160


@dataclass(frozen=True)
class JobImage:
    identifier: str  # names the outputs: masks/IDENTIFIER_segmentation.png
    path: str  # as the workers will open it: absolute, so any node sharing the filesystem finds it
    problem: str | None = None  # why it is refused without being read; None for a valid input


def identifier_problem(identifier: str) -> str | None:
    if not identifier:
        return "the identifier is empty"
    if len(identifier) > MAX_IDENTIFIER_CHARACTERS or len(identifier.encode("utf-8", "replace")) > MAX_IDENTIFIER_BYTES:
        return f"the identifier is longer than {MAX_IDENTIFIER_CHARACTERS} characters or {MAX_IDENTIFIER_BYTES} bytes"
    if "/" in identifier or "\\" in identifier:
        return "the identifier contains a path separator; it must name one file, in the output folder"
    if any(unicodedata.category(character).startswith("C") for character in identifier):
        return "the identifier contains a control or invisible formatting character"
    if identifier.startswith("."):
        return "the identifier starts with a dot (hidden files, '.' and '..' are not allowed)"
    if identifier != identifier.strip():
        return "the identifier starts or ends with white space"
    return None


def collision_key(identifier: str) -> str:
    return unicodedata.normalize("NFC", identifier).casefold()


def shown(text: str) -> str:
    """A refused identifier or path as a table cell: non-printable characters escaped, length bounded."""
    printable = "".join(character if character.isprintable() else ascii(character)[1:-1] for character in text)
    return printable if len(printable) <= MAX_SHOWN_CHARACTERS else printable[:MAX_SHOWN_CHARACTERS] + "…"


def image_paths_in(folder: Path) -> list[Path]:
    """The pictures in a folder, by their suffix; DICOM files, which PACS exports often write with no suffix
    (IM000001), also by their first bytes."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and (path.suffix.lower() in IMAGE_SUFFIXES or (not path.suffix and starts_as_dicom(path)))
    )


def starts_as_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            return is_dicom(stream.read(DICOM_PREAMBLE_BYTES + len(DICOM_PREFIX)))
    except OSError:
        return False


def read_manifest(manifest: Path) -> list[tuple[str, Path]]:
    """A CSV with a `path` column (relative paths are taken from the manifest's folder) and an optional
    `identifier` column (default: the file name without its suffix)."""
    with open(manifest, newline="") as stream:
        reader = csv.DictReader(stream)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise ValueError(f"{manifest} has no `path` column (found {reader.fieldnames})")
        entries = []
        for row in reader:
            path = Path(row["path"] or "")
            path = path if path.is_absolute() else manifest.parent / path
            entries.append(((row.get("identifier") or "").strip() or path.stem, path))
    return entries


def checked_item(identifier: str, path: Path, taken: dict[str, str]) -> JobImage:
    """`taken`: the collision keys of the valid identifiers so far, and whose they are."""
    problem = identifier_problem(identifier)
    if problem is None and collision_key(identifier) in taken:
        problem = f"the identifier names the same output files as {taken[collision_key(identifier)]!r}"
    if problem is None:
        try:
            resolved = str(path.resolve())
        except (OSError, ValueError):  # a NUL byte, a loop of links
            problem = "the path cannot be used as a file name"
    if problem is not None:
        return JobImage(shown(identifier), shown(str(path)), problem)
    taken[collision_key(identifier)] = identifier
    return JobImage(identifier, resolved)


def list_inputs(source: Path) -> list[JobImage]:
    if source.is_dir():
        entries = [(path.stem, path) for path in image_paths_in(source)]
    elif source.is_file() and source.suffix.lower() == ".csv":
        entries = read_manifest(source)
    else:
        raise FileNotFoundError(f"{source} is neither a folder of images nor a manifest .csv")
    taken: dict[str, str] = {}
    return [checked_item(identifier, path, taken) for identifier, path in entries]
