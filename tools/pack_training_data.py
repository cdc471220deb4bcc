"""Packs training and validation pairs into one zip under a size limit, for a GPU machine that cannot reach
`../shared/data`: each image squashed to the model's square and stored as a JPEG (or its own file, where that
is smaller: training squashes it to the square all the same), each mask as stored.

What goes in, in this order, until the limit: every validation pair of every set (the checkpoint is chosen on
them, so a GPU run chooses as a CPU run would), then one photo of every training group (a lesion with its
near-duplicates), then the groups' other photos, each round in the order of a hash of the group. HAM10000
has several photos of many lesions, nearly alike: where the limit falls, every lesion is there once before
any is there twice. The test pairs never go in. The split is the training split's (same held-out fraction
and seed), so the packed run holds out what `lesionseg train` holds out, and unpacked into a folder it is a
`--data-root` with the usual layout:

    SET/images/ID.jpg, SET/masks/ID_segmentation.png, ham10000/metadata.csv

    python tools/pack_training_data.py .gpu/data.zip --max-megabytes 48.5
"""

import argparse
import csv
import io
import zipfile
from pathlib import Path

import cv2

from lesionseg.data.pairs import PairRecord, discover_pairs, read_image
from lesionseg.data.splits import Split, hash_fraction
from lesionseg.imaging.preprocess import resize_to_square

# A stored (uncompressed: JPEG and PNG are compressed already) zip entry's own bytes: its local header and its
# central directory record, each with the name.
ENTRY_BYTES = 30 + 46


def add_bytes(archive: zipfile.ZipFile, name: str, data: bytes) -> int:
    """Adds a file; returns what it cost the zip."""
    archive.writestr(name, data)
    return ENTRY_BYTES + 2 * len(name.encode()) + len(data)


def pair_files(record: PairRecord, size: int, quality: int) -> list[tuple[str, bytes]]:
    square = resize_to_square(read_image(record.image_path), size)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(square, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode {record.image_path}")
    own = record.image_path.read_bytes()
    image = own if len(own) <= len(jpeg) and record.image_path.suffix.lower() == ".jpg" else jpeg.tobytes()
    mask = record.mask_path.read_bytes()
    return [
        (f"{record.source}/images/{record.identifier}.jpg", image),
        (f"{record.source}/masks/{record.identifier}_segmentation.png", mask),
    ]


def rounds_of(records: list[PairRecord], seed: int) -> list[tuple[int, PairRecord]]:
    """(round, pair): every group's first photo is round 0, its second round 1, and so on; within a round,
    groups in an order fixed by a hash of each (another seed than the split's)."""
    groups: dict[str, list[PairRecord]] = {}
    for record in records:
        groups.setdefault(record.group, []).append(record)
    order = sorted(groups, key=lambda name: hash_fraction(seed + 1, "pack", name))
    rounds = max(len(members) for members in groups.values())
    return [(turn, groups[name][turn]) for turn in range(rounds) for name in order if turn < len(groups[name])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="the zip to write")
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--sets", nargs="+", default=["isic2018", "ham10000"])
    parser.add_argument("--size", type=int, default=192, help="the model's input side")
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality")
    parser.add_argument("--max-megabytes", type=float, default=48.5, help="the zip's size limit (MB of 10^6 bytes)")
    parser.add_argument("--held-out-fraction", type=float, default=0.1)
    parser.add_argument("--split-seed", type=int, default=0)
    arguments = parser.parse_args()

    split = Split.for_training(arguments.held_out_fraction, arguments.split_seed)
    limit = int(arguments.max_megabytes * 1e6)
    written, counts = 22, {}  # the zip's end record
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(arguments.output, "w", zipfile.ZIP_STORED) as archive:
        # HAM10000's lesions first: the groups come from them.
        metadata = arguments.data_root / "ham10000" / "metadata.csv"
        if "ham10000" in arguments.sets and metadata.is_file():
            with open(metadata, newline="") as stream:
                rows = list(csv.DictReader(stream))
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=["image_id", "lesion_id"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            written += add_bytes(archive, "ham10000/metadata.csv", text.getvalue().encode())
        records = {name: discover_pairs(arguments.data_root / name) for name in arguments.sets}
        queue = [record for name in arguments.sets for record in split.select(records[name], "validation")]
        training = [
            (turn, set_index, record)
            for set_index, name in enumerate(arguments.sets)
            for turn, record in rounds_of(split.select(records[name], "training"), arguments.split_seed)
        ]
        # The sets' rounds interleaved (a stable sort keeps each round's order): ISIC's first photos, HAM10000's
        # first photos, then the second ones.
        queue += [record for _, _, record in sorted(training, key=lambda entry: entry[:2])]
        for record in queue:
            if limit - written < 3_000:  # no pair is smaller: the rest cannot fit
                break
            files = pair_files(record, arguments.size, arguments.quality)
            cost = sum(ENTRY_BYTES + 2 * len(name.encode()) + len(data) for name, data in files)
            if written + cost > limit:
                if split.subset_of(record) == "validation":
                    raise SystemExit(f"the validation pairs alone exceed {arguments.max_megabytes} MB")
                continue  # a smaller pair further on may still fit
            for name, data in files:
                add_bytes(archive, name, data)
            written += cost
            key = (record.source, split.subset_of(record))
            counts[key] = counts.get(key, 0) + 1
    for name in arguments.sets:
        total = len(split.select(records[name], "training"))
        print(
            f"{name}: {counts.get((name, 'training'), 0)} of {total} training pairs, "
            f"{counts.get((name, 'validation'), 0)} validation pairs"
        )
    print(f"{arguments.output}: {arguments.output.stat().st_size / 1e6:.1f} MB (limit {arguments.max_megabytes} MB)")


if __name__ == "__main__":
    main()
