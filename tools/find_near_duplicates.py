"""Finds near-duplicate photos in the training sets and lists them in pairs, so that a split keeps each
group of them on one side.

    python tools/find_near_duplicates.py [--data-root ../shared/data] [--sets isic2018 ham10000]

The ISIC archive holds some lesions twice under different IDs: the same photo re-exported, colour-corrected
or re-cropped slightly (for example ISIC_0012887/0012989). First, candidates: pairs whose 32×32 greyscale
thumbnails, each standardised (so colour and brightness changes do not matter), correlate at `--coarse` or
more, whole or in their middle half. Many different lesions on similar skin are candidates. Then a candidate
is a near-duplicate when either
- the same points are found in both: `--inliers` or more ORB keypoint matches agree on one
  shift-rotation-scale (RANSAC), which a re-crop or a colour correction keeps and two lesions never share; or
- on smooth photos with few keypoints, the fine detail of the middle (a band-pass of the 96×96 middle half:
  hairs, pigment network, skin lines) correlates at `--detail` or more. Only the middle: the dark ring of a
  dermatoscope's lens is alike in every photo and says nothing.
Writes src/lesionseg/data/near_duplicates.csv: one row per pair, with its evidence, for review by eye;
`lesionseg.data` joins the pairs into groups (transitively). Photos HAM10000 already groups under one
`lesion_id` are not listed again.
"""

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPOSITORY = Path(__file__).resolve().parents[1]
OUTPUT = REPOSITORY / "src" / "lesionseg" / "data" / "near_duplicates.csv"


def middle_grey(path: Path, size: int) -> np.ndarray:
    """The middle half (by side) of the photo, greyscale, at `size`×`size`."""
    with Image.open(path) as image:
        image.draft("L", (4 * size, 4 * size))  # JPEG decodes at a fraction of full size: fast
        grey = np.asarray(image.convert("L").resize((2 * size, 2 * size), Image.BILINEAR), np.float32)
    return grey[size // 2 : size // 2 + size, size // 2 : size // 2 + size]


def whole_grey(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as image:
        image.draft("L", (2 * size, 2 * size))
        return np.asarray(image.convert("L").resize((size, size), Image.BILINEAR), np.float32)


def standardised(values: np.ndarray) -> np.ndarray:
    flat = values.ravel()
    flat = (flat - flat.mean()) / (flat.std() + 1e-6)
    return flat / np.sqrt(flat.size)


def detail(path: Path) -> np.ndarray:
    grey = middle_grey(path, 96)
    return standardised(cv2.GaussianBlur(grey, (0, 0), 1.0) - cv2.GaussianBlur(grey, (0, 0), 3.0))


ORB = cv2.ORB_create(nfeatures=500)
MATCHER = cv2.BFMatcher(cv2.NORM_HAMMING)


def keypoints(path: Path) -> tuple:
    with Image.open(path) as image:
        image.draft("L", (512, 512))
        grey = np.asarray(image.convert("L").resize((256, 256), Image.BILINEAR))
    return ORB.detectAndCompute(grey, None)


def agreeing_matches(first: tuple, second: tuple) -> int:
    """How many one-to-one ORB matches (Lowe's ratio test) one similarity transform explains, at a scale
    a re-crop could have. Many-to-one matches are dropped: with a handful of keypoints on one side, a
    transform that shrinks everything onto one point would otherwise explain them all."""
    (first_points, first_descriptors), (second_points, second_descriptors) = first, second
    if first_descriptors is None or second_descriptors is None or min(len(first_points), len(second_points)) < 8:
        return 0
    pairs = MATCHER.knnMatch(first_descriptors, second_descriptors, k=2)
    best_for_target = {}
    for pair in pairs:
        if len(pair) == 2 and pair[0].distance < 0.75 * pair[1].distance:
            match = pair[0]
            if match.trainIdx not in best_for_target or match.distance < best_for_target[match.trainIdx].distance:
                best_for_target[match.trainIdx] = match
    matches = list(best_for_target.values())
    if len(matches) < 8:
        return 0
    source = np.float32([first_points[match.queryIdx].pt for match in matches])
    target = np.float32([second_points[match.trainIdx].pt for match in matches])
    transform, inliers = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC, ransacReprojThreshold=4)
    if transform is None or not 0.5 <= float(np.hypot(*transform[:, 0])) <= 2.0:
        return 0
    return int(inliers.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=REPOSITORY.parent / "shared" / "data")
    parser.add_argument("--sets", nargs="+", default=["isic2018", "ham10000"])
    parser.add_argument("--coarse", type=float, default=0.93)
    parser.add_argument("--inliers", type=int, default=40)
    parser.add_argument("--detail", type=float, default=0.8)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    arguments = parser.parse_args()

    names, paths = [], []
    for set_name in arguments.sets:
        for path in sorted((arguments.data_root / set_name / "images").glob("*.jpg")):
            names.append((set_name, path.stem))
            paths.append(path)
    lesion_of_image = {}
    for set_name in arguments.sets:
        metadata = arguments.data_root / set_name / "metadata.csv"
        if metadata.is_file():
            with open(metadata, newline="") as stream:
                lesion_of_image.update({(set_name, r["image_id"]): r["lesion_id"] for r in csv.DictReader(stream)})

    middles = np.stack([standardised(middle_grey(path, 32)) for path in paths])
    wholes = np.stack([standardised(whole_grey(path, 32)) for path in paths])
    details, points = {}, {}
    found = []
    for start in range(0, len(names), 2000):
        similarity = np.maximum(middles[start : start + 2000] @ middles.T, wholes[start : start + 2000] @ wholes.T)
        for row, other in zip(*np.nonzero(similarity >= arguments.coarse), strict=True):
            first = start + int(row)
            other = int(other)
            if first >= other or lesion_of_image.get(names[first], 1) == lesion_of_image.get(names[other], 2):
                continue
            for index in (first, other):
                if index not in details:
                    details[index], points[index] = detail(paths[index]), keypoints(paths[index])
            matching_points = agreeing_matches(points[first], points[other])
            detail_correlation = float(details[first] @ details[other])
            if matching_points >= arguments.inliers or detail_correlation >= arguments.detail:
                found.append((names[first], names[other], matching_points, detail_correlation))

    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    with open(arguments.output, "w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["source", "identifier", "other_source", "other_identifier", "matching_points", "detail"])
        for (source, identifier), (other_source, other_identifier), matching_points, detail_correlation in found:
            writer.writerow(
                [source, identifier, other_source, other_identifier, matching_points, f"{detail_correlation:.3f}"]
            )
    print(f"{len(found)} near-duplicate pairs -> {arguments.output}")


if __name__ == "__main__":
    main()
