"""Files for people and programs: written so that a reader, or a crash, sees the old one or the new one, never
half of one; CSV cells that a spreadsheet shows as text and never runs as a formula."""

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes) -> None:
    """Writes beside `path` (`.NAME.partial`), then renames over it: a rename within a folder is atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_bytes(data)
    os.replace(temporary, path)


# A cell starting with one of these is a formula to Excel, LibreOffice and Sheets: text from an upload (a file
# name, an identifier, an error quoting it) must not run as one.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(row: dict) -> dict:
    return {
        key: f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value
        for key, value in row.items()
    }


def as_written(row: dict) -> dict:
    """A row read back from a CSV file, as it was before `spreadsheet_safe`."""
    return {
        key: value[1:]
        if isinstance(value, str) and value[1:].startswith(FORMULA_STARTS) and value[:1] == "'"
        else value
        for key, value in row.items()
    }
