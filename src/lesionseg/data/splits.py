"""The split of each set into training, validation and test, fixed by a hash of each group, so adding images
never moves old ones, and recorded in the model's sidecar, so calibration and evaluation hold out exactly
what its training held out.

- `training`: what the model learns from.
- `validation`: chooses the checkpoint during training, and fits calibration (temperature, review
  threshold, the out-of-distribution thresholds, coverage).
- `test`: chooses nothing; the documentation's and the model card's numbers are measured on it.
- `held-out`: validation and test together; `all`: every pair.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from lesionseg.data import SUBSETS
from lesionseg.data.near_duplicates import NEAR_DUPLICATES
from lesionseg.data.pairs import PairRecord, discover_pairs
from lesionseg.model.sidecar import file_sha256


def hash_fraction(seed: int, source: str, group: str) -> float:
    digest = hashlib.sha256(f"{seed}:{source}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Split:
    # The fraction of groups held out from training, half of them for validation and half for test.
    held_out_fraction: float = 0.1
    seed: int = 0
    # The sha256 of the near-duplicate list the groups were made with; None for models from before 0.4.0,
    # which were split by lesion alone (for those, a test photo whose near-duplicate was trained on is left
    # out of test).
    near_duplicates: str | None = None

    @classmethod
    def for_training(cls, held_out_fraction: float, seed: int) -> "Split":
        return cls(held_out_fraction, seed, file_sha256(NEAR_DUPLICATES))

    @classmethod
    def of_model(cls, training: dict) -> "Split":
        """The split a model was trained with, from its sidecar's training record; (0.1, 0) by lesion where it
        does not say."""
        recorded = training.get("split")
        if not recorded:
            options = training.get("options", {})
            return cls(float(options.get("validation_fraction", 0.1)), int(options.get("split_seed", 0)))
        split = cls(float(recorded["held_out_fraction"]), int(recorded["seed"]), recorded["near_duplicates"])
        if split.near_duplicates not in (None, file_sha256(NEAR_DUPLICATES)):
            # Another list would group, and so split, some photos differently from the model's training: a
            # group it trained on could land in test.
            raise ValueError(
                "the near-duplicate list has changed since this model was trained, so its split cannot be "
                "remade; evaluate it with the lesionseg version that trained it"
            )
        return split

    def record(self) -> dict:
        """What a sidecar keeps of the split."""
        return {"held_out_fraction": self.held_out_fraction, "seed": self.seed, "near_duplicates": self.near_duplicates}

    def subset_of(self, record: PairRecord) -> str:
        """`training`, `validation` or `test`: a hash of the group decides, then a second hash halves what
        is held out."""
        group = record.group if self.near_duplicates else record.lesion
        if hash_fraction(self.seed, record.source, group) >= self.held_out_fraction:
            return "training"
        return "validation" if hash_fraction(self.seed + 1, record.source, group) < 0.5 else "test"

    def select(self, records: list[PairRecord], subset: str) -> list[PairRecord]:
        """The pairs of one subset (see SUBSETS), from all of a set's pairs. A test pair is kept only if every
        photo of its group is in test too: for a model trained before near-duplicates were grouped, one may
        have been trained on. So `records` must be the whole set, not a subset already chosen."""
        if subset == "all":
            return list(records)
        subsets = {record.identifier: self.subset_of(record) for record in records}
        if subset == "held-out":
            return [record for record in records if subsets[record.identifier] != "training"]
        if subset not in ("training", "validation", "test"):
            raise ValueError(f"unknown subset {subset!r}; one of {', '.join(SUBSETS)}")
        chosen = [record for record in records if subsets[record.identifier] == subset]
        if subset == "test":
            sides_of_group: dict[str, set[str]] = {}
            for record in records:
                sides_of_group.setdefault(record.group, set()).add(subsets[record.identifier])
            chosen = [record for record in chosen if sides_of_group[record.group] == {"test"}]
        return chosen


def select_pairs(data_root: Path, set_name: str, subset: str, split: Split) -> list[PairRecord]:
    """One subset (see SUBSETS) of one set's pairs, as `split` makes it."""
    return split.select(discover_pairs(Path(data_root) / set_name), subset)
