"""`tools/pack_training_data.py` on the real sets: under its limit, every validation pair in, no test pair,
every lesion once before any twice; and unpacked, a `--data-root` whose split is the training split."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lesionseg.data.pairs import discover_pairs
from lesionseg.data.splits import Split

# Slow tier (`make test-fast` leaves it out): it decodes a thousand real pictures in a process of its own.
pytestmark = pytest.mark.slow

TOOL = Path(__file__).parents[2] / "tools" / "pack_training_data.py"


def test_a_pack_holds_validation_whole_no_test_pair_and_first_photos_first(data_root, tmp_path):
    packed = tmp_path / "data.zip"
    # HAM10000 first: its first photos come before ISIC 2018's, and 6 MB holds only a part of them.
    run = [sys.executable, str(TOOL), str(packed), "--data-root", str(data_root), "--max-megabytes", "6"]
    run += ["--sets", "ham10000", "isic2018"]
    finished = subprocess.run(run, capture_output=True, text=True, check=True)
    assert f"{packed}:" in finished.stdout and "(limit 6.0 MB)" in finished.stdout
    assert packed.stat().st_size <= 6e6
    with zipfile.ZipFile(packed) as archive:
        archive.extractall(tmp_path / "root")
    split = Split.for_training(0.1, 0)
    for name in ("isic2018", "ham10000"):
        every = discover_pairs(data_root / name)
        inside = {record.identifier for record in discover_pairs(tmp_path / "root" / name)}
        assert {record.identifier for record in split.select(every, "validation")} <= inside
        assert not {record.identifier for record in split.select(every, "test")} & inside
        # The packed folder splits as the source does: the same pairs land in validation.
        repacked = discover_pairs(tmp_path / "root" / name)
        assert {r.identifier for r in split.select(repacked, "validation")} == {
            r.identifier for r in split.select(every, "validation")
        }
    # 6 MB leaves room for a part of HAM10000's training photos: no lesion twice while another is missing.
    ham = discover_pairs(tmp_path / "root" / "ham10000")
    training = split.select(ham, "training")
    groups = [record.group for record in training]
    assert training and len(groups) == len(set(groups))
