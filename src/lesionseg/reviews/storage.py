"""Uploaded images as files named by their sha256: one copy however many cases share it.

A file appears whole or not at all (written beside, flushed to disk, then renamed), and always before
the case that names it is committed. So a crash can leave an image without a case but never a case
without its image; `remove_orphans` at start-up deletes the former.

Several processes share the folder: `lesionseg serve --workers N`, Ray Serve replicas on one machine, a
rolling restart, `lesionseg export-reviews` beside a live service. `lock` is a file lock in the folder
itself, so it holds across all of them: storing an image and committing its case, deleting a case and
then its image if no other case names it, and the start-up sweep each happen under it, never interleaved.
The sweep also leaves alone any file younger than a grace period, for whatever writes without the lock.
"""

import errno
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from lesionseg.reviews.errors import StorageFull

# The sweep at start-up deletes an image no case names only once it is this old (the default of
# LESIONSEG_ORPHAN_GRACE_SECONDS).
DEFAULT_ORPHAN_GRACE_SECONDS = 3600.0


def shared_secret(directory: Path) -> bytes:
    """32 random bytes kept in `directory/.secret`, the same for every process that asks: the first writes it
    beside and links it into place (a link never replaces a file, so one writer wins), the rest read it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".secret"
    if not path.is_file():
        descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".incoming-secret-")
        try:
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(os.urandom(32))
                stream.flush()
                os.fsync(stream.fileno())
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            Path(temporary).unlink(missing_ok=True)
    return path.read_bytes()


class ImageStore:
    def __init__(self, directory: Path, min_free_bytes: int = 0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # The quota: an image is refused (StorageFull) rather than leave less than this free on the disk.
        self.min_free_bytes = min_free_bytes
        # Held across processes and threads alike (each thread of each process opens and locks the file).
        self.lock = FileLock(self.directory / ".lock")

    def path(self, sha256: str) -> Path:
        # Two levels of 256 folders keep each folder small with millions of images.
        return self.directory / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes) -> str:
        """Stores `data` (once) and returns its sha256. The caller holds `lock`."""
        sha256 = hashlib.sha256(data).hexdigest()
        target = self.path(sha256)
        if target.is_file():
            os.utime(target)  # newly named again: the sweep's grace period starts over
            return sha256
        if shutil.disk_usage(self.directory).free - len(data) < self.min_free_bytes:
            raise StorageFull()
        temporary = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except OSError as error:
            if temporary:
                Path(temporary).unlink(missing_ok=True)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull() from error
            raise
        except BaseException:
            if temporary:
                Path(temporary).unlink(missing_ok=True)
            raise
        return sha256

    def get(self, sha256: str) -> bytes:
        """The image's bytes; FileNotFoundError if it is not stored."""
        return self.path(sha256).read_bytes()

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def stored(self) -> Iterator[str]:
        """The sha256 of every complete image."""
        for path in self.directory.glob("??/??/*"):
            if path.is_file() and not path.name.startswith(".incoming-"):
                yield path.name

    def remove_orphans(self, referenced: set[str], grace_seconds: float = DEFAULT_ORPHAN_GRACE_SECONDS) -> int:
        """Deletes images no case names, and writes a crash left unfinished, if older than `grace_seconds`;
        returns how many images. The caller holds `lock` and read `referenced` under it."""
        cutoff = time.time() - grace_seconds

        def old_enough(path: Path) -> bool:
            try:
                return path.stat().st_mtime <= cutoff
            except FileNotFoundError:
                return False

        for partial in self.directory.glob("??/??/.incoming-*"):
            if old_enough(partial):
                partial.unlink(missing_ok=True)
        orphans = [sha256 for sha256 in self.stored() if sha256 not in referenced and old_enough(self.path(sha256))]
        for sha256 in orphans:
            self.delete(sha256)
        return len(orphans)
