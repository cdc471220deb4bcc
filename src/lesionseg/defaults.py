"""The one place the defaults of a prediction are written: Settings, the CLI, the Python API, batch jobs
and the evaluation commands all take them from here. No imports, so `lesionseg --help` can show them."""

DEFAULT_SAMPLES = 10
DEFAULT_THRESHOLD = 0.5
