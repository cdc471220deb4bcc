"""The dermoscopy datasets: discovering ISIC-layout pairs, the leak-free split into training, validation
and test, and reading images and masks. Training, calibration and evaluation all take their pairs from here."""

# The subsets a command may select (`--split`); here, with no imports, so that `lesionseg --help` stays light.
SUBSETS = ("training", "validation", "test", "held-out", "all")
