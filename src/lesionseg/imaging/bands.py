"""Full-size maps a band of rows at a time. A probability or uncertainty map at a 64-megapixel image's size
is 256 MB of float32; the outputs draw it band by band, and a map resized from the model's resolution
(`MapBands`) is never whole unless someone asks for it."""

from collections.abc import Iterator

import cv2
import numpy as np

# Rows computed at once where a map is an array: a few MB of temporaries even at 8000 px wide.
BAND_ROWS = 256


def bands_of(values) -> Iterator[tuple[slice, np.ndarray]]:
    """A full-size map one band of rows at a time: slices of an array, or the bands of a map that is
    never whole (anything that iterates as (rows, band) pairs, as `MapBands` does)."""
    if not isinstance(values, np.ndarray):
        yield from values
        return
    for start in range(0, values.shape[0], BAND_ROWS):
        yield slice(start, start + BAND_ROWS), values[start : start + BAND_ROWS]


# Up to this many pixels a map is resized whole by OpenCV (16 MB of float32; 3× as fast as by bands).
WHOLE_MAP_PIXELS = 4_000_000


def linear_sampling(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of `target` positions, the lower of its two source indices and the next one's weight, as
    OpenCV's bilinear resize samples: pixel centres aligned, the edges clamped (weight 0)."""
    position = ((np.arange(target) + 0.5) * (source / target) - 0.5).astype(np.float32)
    lower = np.floor(position).astype(np.int64)
    weight = (position - lower).astype(np.float32)
    weight[(lower < 0) | (lower >= source - 1)] = 0.0
    lower = np.clip(lower, 0, source - 1)
    return lower, weight


class MapBands:
    """An S×S map at the model's resolution, resized to the image's H×W (bilinear) one band of rows at a
    time. Above WHOLE_MAP_PIXELS, OpenCV resizes the columns once (S×W) and each band blends two of those
    rows per output row, so a 64-megapixel float map (256 MB) never exists whole; the bands agree with
    cv2.resize within 1e-5 (a mask differs in about one pixel in a million). Iterating gives (rows, band)
    pairs; `whole()` the full map for those who ask for it."""

    def __init__(self, values: np.ndarray, width: int, height: int) -> None:
        self.shape = (height, width)
        if width * height <= WHOLE_MAP_PIXELS:
            self.resized = cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
            return
        self.resized = None
        self.columns = cv2.resize(values, (width, values.shape[0]), interpolation=cv2.INTER_LINEAR)
        # Each source row's step to the next (none after the last: its weight is always 0).
        self.steps = np.diff(self.columns, axis=0, append=self.columns[-1:])
        self.lower, self.weight = linear_sampling(values.shape[0], height)

    def __iter__(self) -> Iterator[tuple[slice, np.ndarray]]:
        """(rows, band) pairs, top to bottom. An image's rows are many times the model's, so runs of them
        fall between the same two source rows: each run is that row plus its weights times the step to the
        next, written in place (3–4.6× as fast as gathering two rows per output row, measured). The bands
        share one buffer (fresh 4 MB arrays each time cost more in page faults than the arithmetic), so each
        band is valid only until the next is asked for."""
        if self.resized is not None:
            yield from bands_of(self.resized)
            return
        buffer = np.empty((BAND_ROWS, self.shape[1]), np.float32)
        for start in range(0, self.shape[0], BAND_ROWS):
            stop = min(start + BAND_ROWS, self.shape[0])
            band, sources, weights = buffer[: stop - start], self.lower[start:stop], self.weight[start:stop]
            run_starts = np.flatnonzero(np.diff(sources, prepend=-1))
            for run_start, run_stop in zip(run_starts, [*run_starts[1:], stop - start], strict=True):
                source = sources[run_start]
                np.multiply.outer(weights[run_start:run_stop], self.steps[source], out=band[run_start:run_stop])
                band[run_start:run_stop] += self.columns[source]
            yield slice(start, stop), band

    def whole(self) -> np.ndarray:
        if self.resized is not None:
            return self.resized
        values = np.empty(self.shape, np.float32)
        for rows, band in self:
            values[rows] = band
        return values
