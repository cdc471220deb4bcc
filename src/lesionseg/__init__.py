"""lesionseg: skin-lesion segmentation with per-pixel Monte Carlo Dropout uncertainty.

import lesionseg
segmenter = lesionseg.load()
result = segmenter.predict("lesion.jpg")   # .mask, .probability, .uncertainty, .score, ...
"""

__version__ = "0.5.0"
# The Python API, imported on first use so that `import lesionseg` stays light (the CLI reads only this).
API = ("load", "Segmenter", "Result", "PredictionRequest")


def __getattr__(name: str):
    if name in API:
        from lesionseg import segmenter

        return getattr(segmenter, name)
    raise AttributeError(f"module 'lesionseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The lazily imported API too, so that tab completion and `dir(lesionseg)` offer `load`."""
    return sorted({*globals(), *API})
