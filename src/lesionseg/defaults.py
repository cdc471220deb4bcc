"""The one place the defaults of a prediction are written: Settings, the CLI, the Python API, batch jobs
and the evaluation commands all take them from here. No imports, so `lesionseg --help` can show them."""

DEFAULT_SAMPLES = 10
DEFAULT_THRESHOLD = 0.5
# Flip test-time augmentation: the image and its two flips, their samples pooled. On the test split it raised
# Jaccard on both sources and cut failures from 36 to 31, and it helped under 23 of the shift bed's 28
# set-and-shift rows (docs/another-clinic.md), for three trunk runs instead of one.
DEFAULT_TTA = True
# calibrate-site: the least share of the gate's own non-dermoscopic pictures (its fitting set's, each scored by
# a refit that has not seen it) that a site's gate must still catch. The model's gate catches all of them; a
# site's refit may give up one in a hundred. Where the flagged fraction's line catches fewer, the line comes
# down, and the site is told how much of its dermoscopy that may flag: with 50 cases, the line at a flagged
# fraction of 0.02 must pass the highest of the site's scores, and on the simulated site one blue-black
# close-up set it so high that 84.8-86.1 % of the non-dermoscopic evaluation set was caught (docs/another-clinic.md).
MIN_CAUGHT = 0.99
