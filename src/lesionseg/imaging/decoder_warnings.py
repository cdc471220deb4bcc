"""The decoders' warnings during one decode, gathered on the decoding thread and logged as one bounded line.

A hostile file can make Pillow warn once per EXIF tag: 65,000 lines on stderr for one upload, each with
its own text. `warnings.catch_warnings` would gather them, but it swaps process-wide state and is not
safe with several decoding threads. Instead one hook, installed once, hands each Pillow warning to the
collector of the thread that raised it, and passes any other warning on unchanged. libvips's warnings
(a damaged JPEG's, say) reach Python's logging through pyvips's "pyvips" logger, on the decoding thread:
a filter there does the same for them, and drops those outside a decode (a photo read again to be drawn
repeats its decode's warnings). pydicom and highdicom quote a file's values in their messages (a patient's name
that breaks its value representation's rules, say): their warnings and log records are counted in a decode,
their text withheld, and never printed or logged anywhere.
"""

import logging
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

MAX_KEPT_MESSAGES = 3
MAX_MESSAGE_CHARACTERS = 200
# "always" rather than the default "once per text": Pillow's texts name the tag or offset, so each
# differs, and the default would remember every one of them for the life of the process.
PILLOW_MODULES = r"PIL\."
# Where pyvips logs libvips's messages.
LIBVIPS_LOGGER = "pyvips"
# The DICOM libraries, whose messages may quote a patient's details, and what is kept of one.
DICOM_LIBRARIES = ("pydicom", "highdicom")
WITHHELD = "{source}: a DICOM warning, its text withheld (it may quote the file's values)"
# The entry `warnings.filterwarnings` makes, to tell whether a reset removed it.
PILLOW_FILTER_ENTRY = ("always", None, Warning, re.compile(PILLOW_MODULES), 0)

_thread_state = threading.local()
_install_lock = threading.Lock()
_previous_showwarning = warnings.showwarning


@dataclass
class DecoderWarnings:
    count: int = 0
    messages: list[str] = field(default_factory=list)  # the first few distinct ones, shortened

    def add(self, message: str) -> None:
        self.count += 1
        message = message[:MAX_MESSAGE_CHARACTERS]
        if len(self.messages) < MAX_KEPT_MESSAGES and message not in self.messages:
            self.messages.append(message)


def from_dicom_library(filename: str) -> bool:
    return any(f"/{library}/" in filename.replace("\\", "/") for library in DICOM_LIBRARIES)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    collector = getattr(_thread_state, "collector", None)
    if from_dicom_library(str(filename)):
        if collector is not None:
            collector.add(WITHHELD.format(source=category.__name__))
        return
    if collector is None:
        _previous_showwarning(message, category, filename, lineno, file, line)
        return
    collector.add(f"{category.__name__}: {message}")


def _collect_libvips_record(record: logging.LogRecord) -> bool:
    collector = getattr(_thread_state, "collector", None)
    if collector is not None:
        collector.add(f"libvips: {record.getMessage()}")
    return False  # never logged on its own


class WithholdingHandler(logging.Handler):
    """The DICOM libraries' one log handler, their records going no further: counted in a decode, never written
    (the text may quote a patient's details). A handler, not a filter, sees their modules' child loggers too."""

    def emit(self, record: logging.LogRecord) -> None:
        collector = getattr(_thread_state, "collector", None)
        if collector is not None:
            collector.add(WITHHELD.format(source=record.name))


_withholding_handler = WithholdingHandler()


def install() -> None:
    """Idempotent; called before each decode, since test runners and notebooks reset warning state."""
    global _previous_showwarning
    libvips_logger = logging.getLogger(LIBVIPS_LOGGER)
    if _collect_libvips_record not in libvips_logger.filters:
        libvips_logger.addFilter(_collect_libvips_record)
    for library in DICOM_LIBRARIES:
        library_logger = logging.getLogger(library)
        if _withholding_handler not in library_logger.handlers:
            library_logger.addHandler(_withholding_handler)
            library_logger.propagate = False
    if warnings.showwarning is _show_warning and PILLOW_FILTER_ENTRY in warnings.filters:
        return
    with _install_lock:
        if warnings.showwarning is not _show_warning:
            _previous_showwarning = warnings.showwarning
            warnings.showwarning = _show_warning
        if PILLOW_FILTER_ENTRY not in warnings.filters:
            warnings.filterwarnings("always", module=PILLOW_MODULES)


@contextmanager
def collect_decoder_warnings() -> Iterator[DecoderWarnings]:
    """Pillow's and libvips's warnings raised on this thread inside the block are counted, not printed."""
    install()
    collector = DecoderWarnings()
    _thread_state.collector = collector
    try:
        yield collector
    finally:
        _thread_state.collector = None
