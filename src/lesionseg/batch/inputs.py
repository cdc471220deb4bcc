"""What a batch job reads: the images of a folder, or the paths listed in a manifest CSV."""

import csv
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}


@dataclass(frozen=True)
class BatchItem:
    identifier: str  # names the outputs: masks/IDENTIFIER_segmentation.png
    path: str  # as the workers will open it: absolute, so any node sharing the filesystem finds it


def image_paths_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


def read_manifest(manifest: Path) -> list[tuple[str, Path]]:
    """A CSV with a `path` column (relative paths are taken from the manifest's folder) and an optional
    `identifier` column (default: the file name without its suffix)."""
    with open(manifest, newline="") as stream:
        reader = csv.DictReader(stream)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise ValueError(f"{manifest} has no `path` column (found {reader.fieldnames})")
        entries = []
        for row in reader:
            path = Path(row["path"])
            path = path if path.is_absolute() else manifest.parent / path
            entries.append(((row.get("identifier") or "").strip() or path.stem, path))
    return entries


def list_inputs(source: Path) -> list[BatchItem]:
    if source.is_dir():
        entries = [(path.stem, path) for path in image_paths_in(source)]
    elif source.is_file() and source.suffix.lower() == ".csv":
        entries = read_manifest(source)
    else:
        raise FileNotFoundError(f"{source} is neither a folder of images nor a manifest .csv")
    seen: dict[str, Path] = {}
    for identifier, path in entries:
        if identifier in seen:
            # Two inputs would write the same output files; refuse rather than keep one silently.
            raise ValueError(f"identifier {identifier!r} is used by both {seen[identifier]} and {path}")
        seen[identifier] = path
    return [BatchItem(identifier, str(path.resolve())) for identifier, path in entries]
