"""A ceiling on the memory that requests' images take at once, whatever their number and size.

A request's working memory grows with its image's pixel count, its kind and its output format: at the
64-megapixel limit, from about 0.1–0.3 GB (`mask`, `png`, `uncertainty`, `json`) to 0.2–1 GB (`overlay`, which
shows the photo itself), measured with benchmarks/memory.py. Full-size probability and uncertainty maps are never
held whole (see `imaging.bands.MapBands`), nor most pictures (`imaging.decode.StreamedPicture`); what remains is
the mask, the picture being encoded and, for `overlay`, what the photo's decoder holds. Before decoding, a
request reads its image's size and format from the header and reserves its estimate here; it waits while the
reservations of others leave no room. One request larger than the whole budget runs alone.
After a large request, memory the allocator keeps is handed back to the system.
"""

import ctypes
import ctypes.util
import functools
import io
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from PIL import Image

from lesionseg import cancellation
from lesionseg.imaging.containers import is_dicom
from lesionseg.imaging.decode import ALLOWED_FORMATS

# Peak working bytes per image pixel, by output, at 64 megapixels, for the costliest kind of image
# (benchmarks/memory.py), rounded up, with room to spare. libvips reads most large pictures a band at a time
# (imaging/decode.py), but Pillow still decodes some whole at four bytes a pixel (CMYK, 16-bit colour), and
# a photo shown that EXIF turns is held whole to be turned (466 MB for a 64-megapixel JPEG, measured); the
# overlay's PNG is the rest.
BYTES_PER_PIXEL = {"mask": 5, "json": 5, "uncertainty": 5, "overlay": 9, "png": 5, "json_with_images": 9}
# The DICOM answers: the Segmentation packs the whole mask to bits; the Parametric Map's encoder takes the whole
# float32 map and copies it into its pixel data.
BYTES_PER_PIXEL |= {"dicom-seg": 6, "dicom-pmap": 14}
# A DICOM upload's frame is decoded whole, beyond what any output needs: pydicom's copy of the pixel data, the
# codec's buffers, the RGB array and Pillow's copy, from which the model's picture is reduced. Measured at 9
# megapixels, decoding alone: 11.5 bytes a pixel uncompressed, 15.2 JPEG-LS, 16.0 JPEG 2000 (a JPEG baseline frame
# is decoded as a JPEG upload is, and costs less).
DICOM_DECODE_BYTES_PER_PIXEL = 16
# A WebP shown at its own size is decoded whole by libwebp and held twice in libvips (the frame and its
# copy): 623 MB at 64 MP, 631 MB turned, measured.
WEBP_BYTES_PER_PIXEL = {"overlay": 12, "json_with_images": 12}
# A box-prompted proposal's encoder (LiteMedSAM, always at 256×256) beyond the picture's decode: 266 MB above
# the loaded sessions at its peak, measured in process, whatever the picture's size; reserved with room.
PROPOSAL_ENCODER_BYTES = 320 * 1024 * 1024
# Below this a request's memory is small enough to leave to the allocator.
TRIM_AFTER_BYTES = 256 * 1024 * 1024
WAIT_STEP_SECONDS = 0.05
Outcome = TypeVar("Outcome")


def read_header(data: bytes) -> tuple[int, str | None]:
    """The pixel count the image's header claims, and its format; (0, None) where it cannot be read
    (decoding then says why)."""
    if is_dicom(data):
        from lesionseg.imaging.dicom import declared_pixels  # pydicom, on the first DICOM upload

        return declared_pixels(data), "DICOM"
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            return image.size[0] * image.size[1], image.format
    except Exception:  # noqa: BLE001 - any unreadable header is refused, with reasons, by the decoder
        return 0, None


# glibc's mallopt parameters: the most malloc arenas the process may create; the size from which a block is
# mapped on its own (and unmapped when freed) rather than carved from an arena; and how much free memory the
# top of an arena may keep before it is given back to the system.
M_ARENA_MAX = -8
MALLOC_ARENAS = 2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
M_TRIM_THRESHOLD = -1
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024


@functools.cache
def c_library_function(name: str):
    """A glibc function, looked up once; None where the C library has none (musl, macOS)."""
    library = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(library), name, None) if library else None


def configure_malloc() -> None:
    """Called before the first request, as arenas are made on demand.

    At most two malloc arenas, where glibc would give each busy worker thread its own (up to 8 per core).
    Each arena keeps what its thread freed, and no trim gives it all back: after four 64-megapixel requests
    at once on a busy machine, 164–178 MB stayed with the default arenas and 50–67 MB with two, measured;
    12-megapixel requests ran no slower.

    Blocks of 4 MB and more are mapped on their own. By default glibc raises that threshold to the largest
    block freed so far (up to 32 MB), and a picture read a band at a time (6–8 MB bands at 64 megapixels,
    made and freed by the dozen among small blocks that stay) then fragments the arena: reducing a
    64-megapixel JPEG by bands peaked at 324 MB with the default and 130 MB with this. Fixing the threshold
    also fixes the trim threshold, at 128 KB unless set: the arenas were then given back and faulted in
    again on every request, and a 4000×3000 request ran 1.4–2.1 times as slow. At 64 MB, glibc's own
    ceiling for it, 4000×3000 requests run as fast as with the defaults, measured."""
    mallopt = c_library_function("mallopt")
    if mallopt is not None:
        mallopt(M_ARENA_MAX, MALLOC_ARENAS)
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


def release_freed_memory() -> None:
    """glibc keeps freed blocks for reuse; after a 64-megapixel request that is gigabytes held for nothing."""
    trim = c_library_function("malloc_trim")
    if trim is not None:
        trim(0)


class MemoryBudget:
    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = capacity_bytes
        self.reserved = 0
        self.condition = threading.Condition()

    @contextmanager
    def reserve(self, estimate: int) -> Iterator[None]:
        """Blocks this worker thread until `estimate` bytes fit (at most the whole budget); stops waiting
        if its request is cancelled."""
        estimate = min(estimate, self.capacity)
        with self.condition:
            while self.reserved + estimate > self.capacity:
                self.condition.wait(WAIT_STEP_SECONDS)
                cancellation.check()
            self.reserved += estimate
        try:
            yield
        finally:
            with self.condition:
                self.reserved -= estimate
                self.condition.notify_all()

    def run(self, estimate: int, work: Callable[[], Outcome]) -> Outcome:
        """Runs `work` once `estimate` bytes fit. After a large one, freed memory goes back to the system,
        only once `work` has returned: its locals (the decoded image, the mask) are freed by then, where a
        trim inside its own `with` block would leave them to the allocator."""
        with self.reserve(estimate):
            outcome = work()
        if estimate >= TRIM_AFTER_BYTES:
            release_freed_memory()
        return outcome


def estimate_bytes(data: bytes, output: str) -> int:
    pixels, format = read_header(data)
    bytes_per_pixel = WEBP_BYTES_PER_PIXEL.get(output) if format == "WEBP" else None
    decode_bytes_per_pixel = DICOM_DECODE_BYTES_PER_PIXEL if format == "DICOM" else 0
    return pixels * ((bytes_per_pixel or BYTES_PER_PIXEL[output]) + decode_bytes_per_pixel)
