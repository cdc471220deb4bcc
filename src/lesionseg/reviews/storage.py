"""Uploaded images as files named by their sha256: one copy however many cases share it.

A file appears whole or not at all (written beside, flushed to disk, then renamed), and always before
the case that names it is committed. So a crash can leave an image without a case but never a case
without its image; `remove_orphans` at start-up deletes the former.
"""

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class ImageStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        # Two levels of 256 folders keep each folder small with millions of images.
        return self.directory / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes) -> str:
        """Stores `data` (once) and returns its sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        target = self.path(sha256)
        if target.is_file():
            return sha256
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return sha256

    def get(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def stored(self) -> Iterator[str]:
        """The sha256 of every complete image."""
        for path in self.directory.glob("??/??/*"):
            if path.is_file() and not path.name.startswith(".incoming-"):
                yield path.name

    def remove_orphans(self, referenced: set[str]) -> int:
        """Deletes images no case names, and writes a crash left unfinished; returns how many images."""
        for partial in self.directory.glob("??/??/.incoming-*"):
            partial.unlink(missing_ok=True)
        orphans = [sha256 for sha256 in self.stored() if sha256 not in referenced]
        for sha256 in orphans:
            self.delete(sha256)
        return len(orphans)
