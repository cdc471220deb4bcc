import numpy as np
import pytest

from lesionseg.imaging.regions import bounding_box, outline_polygons, rle_decode, rle_encode


def test_rle_is_column_major_and_starts_with_background():
    mask = np.array([[0, 1], [1, 1]], bool)  # column-major: 0, 1, 1, 1
    assert rle_encode(mask) == {"size": [2, 2], "counts": [1, 3]}
    starts_with_lesion = np.array([[1, 0], [1, 0]], bool)
    assert rle_encode(starts_with_lesion)["counts"] == [0, 2, 2]


def test_rle_is_what_pycocotools_reads():
    mask = np.random.default_rng(0).random((37, 53)) > 0.6
    ours = rle_encode(mask)
    coco_mask = pytest.importorskip("pycocotools.mask", reason="pycocotools is not installed: `make test` installs it")
    decoded = coco_mask.decode(coco_mask.frPyObjects(ours, *ours["size"]))
    assert np.array_equal(decoded.astype(bool), mask)
    assert np.array_equal(rle_decode(ours), mask)


def test_bounding_box_and_empty_mask():
    mask = np.zeros((10, 20), bool)
    assert bounding_box(mask) is None and outline_polygons(mask) == []
    mask[2:5, 3:9] = True
    assert bounding_box(mask) == [3, 2, 6, 3]


def test_outline_of_a_rectangle_is_its_corners():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 4:12] = True
    (polygon,) = outline_polygons(mask)
    corners = set(map(tuple, np.array(polygon).reshape(-1, 2).tolist()))
    assert corners == {(4, 5), (4, 14), (11, 14), (11, 5)}


def test_rle_round_trips_random_large_and_uint8_masks():
    generator = np.random.default_rng(0)
    for mask in (generator.random((37, 53)) > 0.5, np.ones((5, 7), bool), generator.random((3000, 4000)) > 0.99):
        assert np.array_equal(rle_decode(rle_encode(mask)), mask)
        assert rle_encode(mask.astype(np.uint8)) == rle_encode(mask)
