"""The training/validation/test split: by group, stable, near-duplicates on one side, recorded in the sidecar."""

import csv

import pytest

from lesionseg.config import DEFAULT_WEIGHTS
from lesionseg.data.near_duplicates import NEAR_DUPLICATES
from lesionseg.data.pairs import discover_pairs
from lesionseg.data.splits import Split
from lesionseg.model.sidecar import file_sha256, read_sidecar

# Named in the structural review: the same photo under two ISIC IDs, one of each pair on either side of the
# old split.
REVIEWED_NEAR_DUPLICATES = [
    ("ISIC_0012989", "ISIC_0012887"),
    ("ISIC_0000519", "ISIC_0011295"),
    ("ISIC_0000224", "ISIC_0014791"),
]


@pytest.fixture(scope="module")
def isic(data_root):
    return discover_pairs(data_root / "isic2018")


@pytest.fixture(scope="module")
def ham(data_root):
    return discover_pairs(data_root / "ham10000")


def sides(split, records):
    return {record.identifier: split.subset_of(record) for record in records}


def test_the_three_subsets_are_disjoint_cover_every_pair_and_have_the_expected_sizes(isic, ham):
    split = Split.for_training(0.1, 0)
    for records in (isic, ham):
        chosen = {subset: split.select(records, subset) for subset in ("training", "validation", "test")}
        identifiers = [r.identifier for subset in chosen.values() for r in subset]
        assert sorted(identifiers) == sorted(r.identifier for r in records)
        assert 0.03 < len(chosen["validation"]) / len(records) < 0.07
        assert 0.03 < len(chosen["test"]) / len(records) < 0.07
        held_out = {r.identifier for r in split.select(records, "held-out")}
        assert held_out == {r.identifier for r in chosen["validation"] + chosen["test"]}


def test_no_group_is_on_two_sides(isic, ham):
    split = Split.for_training(0.1, 0)
    for records in (isic, ham):
        side = sides(split, records)
        sides_of_group = {}
        for record in records:
            sides_of_group.setdefault(record.group, set()).add(side[record.identifier])
        assert all(len(found) == 1 for found in sides_of_group.values())
    lesions = {r.lesion for r in ham}
    assert len(lesions) < len(ham) and {r.group for r in ham} <= lesions, "HAM10000 groups are its lesion_ids"


def test_the_reviewed_near_duplicates_share_a_group(isic):
    group = {record.identifier: record.group for record in isic}
    for first, second in REVIEWED_NEAR_DUPLICATES:
        assert group[first] == group[second], (first, second)


def test_the_split_is_stable_whatever_the_order_and_other_images(isic):
    split = Split.for_training(0.1, 0)
    assert sides(split, isic) == sides(split, list(reversed(isic)))
    # A set with half the images keeps each remaining image where it was.
    half = isic[::2]
    whole = sides(split, isic)
    assert all(whole[identifier] == side for identifier, side in sides(split, half).items())


def test_the_shipped_models_test_split_holds_no_photo_whose_near_duplicate_it_trained_on(isic, ham):
    split = Split.of_model(read_sidecar(DEFAULT_WEIGHTS).training)
    assert split == Split(0.1, 0, None), "trained before near-duplicates were grouped: split by lesion"
    for records in (isic, ham):
        trained_groups = {r.group for r in records if split.subset_of(r) == "training"}
        test = split.select(records, "test")
        assert test and not {r.group for r in test} & trained_groups
    # Without grouping, one of a reviewed pair was trained on and the other sat in test; that one is left out.
    test_identifiers = {r.identifier for r in split.select(isic, "test")}
    side = sides(split, isic)
    for first, second in REVIEWED_NEAR_DUPLICATES:
        if {side[first], side[second]} != {"test"}:
            assert first not in test_identifiers and second not in test_identifiers


def test_a_new_training_records_its_split_and_a_changed_list_is_refused():
    split = Split.for_training(0.2, 7)
    assert split.near_duplicates == file_sha256(NEAR_DUPLICATES)
    assert Split.of_model({"split": split.record()}) == split
    assert Split.of_model({"options": {"validation_fraction": 0.2, "split_seed": 7}}) == Split(0.2, 7)
    assert Split.of_model({}) == Split(0.1, 0), "a sidecar that does not say gets the defaults training used"
    stale = {**split.record(), "near_duplicates": "0" * 64}
    with pytest.raises(ValueError, match="near-duplicate list has changed"):
        Split.of_model({"split": stale})


def test_each_listed_pair_is_within_one_set():
    with open(NEAR_DUPLICATES, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert rows and all(row["source"] == row["other_source"] for row in rows)
    pairs = {(row["identifier"], row["other_identifier"]) for row in rows}
    assert {tuple(sorted(pair)) for pair in REVIEWED_NEAR_DUPLICATES} <= {tuple(sorted(pair)) for pair in pairs}
