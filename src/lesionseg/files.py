"""Writing a file so that a reader, or a crash, sees the old one or the new one, never half of one."""

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes) -> None:
    """Writes beside `path` (`.NAME.partial`), then renames over it: a rename within a folder is atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_bytes(data)
    os.replace(temporary, path)
