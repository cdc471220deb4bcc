"""The near-duplicate photos found by `tools/find_near_duplicates.py` (the same lesion photographed or exported
twice under different IDs), kept in `near_duplicates.csv` beside this file, one pair per row with its evidence."""

import csv
from functools import cache
from pathlib import Path

NEAR_DUPLICATES = Path(__file__).with_name("near_duplicates.csv")


@cache
def near_duplicate_pairs() -> tuple[tuple[str, str, str], ...]:
    """(source, identifier, other identifier) for every listed pair. Both photos of a pair are in one set,
    so each set's split can be made from that set alone (a test holds the list to this)."""
    with open(NEAR_DUPLICATES, newline="") as stream:
        return tuple((row["source"], row["identifier"], row["other_identifier"]) for row in csv.DictReader(stream))


def near_duplicate_groups(source: str, lesion_of_image: dict[str, str]) -> dict[str, str]:
    """Each image's group: its lesion, joined (transitively) with the lesions of its near-duplicates.
    A joined group is named by its first lesion in sorted order, so an image that has no near-duplicate,
    or is the first of its group, keeps the name, and with it its side of the split."""
    parent = {lesion: lesion for lesion in lesion_of_image.values()}

    def root(lesion: str) -> str:
        while parent[lesion] != lesion:
            parent[lesion] = parent[parent[lesion]]
            lesion = parent[lesion]
        return lesion

    for pair_source, identifier, other in near_duplicate_pairs():
        if pair_source == source and identifier in lesion_of_image and other in lesion_of_image:
            first, second = sorted((root(lesion_of_image[identifier]), root(lesion_of_image[other])))
            parent[second] = first
    return {identifier: root(lesion) for identifier, lesion in lesion_of_image.items()}
