"""Discovery and reading of the real ISIC-layout pairs."""

import numpy as np
import pytest
from PIL import Image

from lesionseg.data.pairs import MASK_CUT, discover_pairs, read_image, read_mask, read_truth, truth_from_mask


@pytest.mark.parametrize("set_name", ["isic2018", "ham10000"])
def test_every_pair_has_an_image_and_a_mask(data_root, set_name):
    records = discover_pairs(data_root / set_name)
    assert len(records) > 2000
    assert all(r.mask_path.name == f"{r.identifier}_segmentation.png" for r in records)
    assert all(r.image_path.is_file() and r.mask_path.is_file() for r in records)


def test_isic_lesions_are_images_and_ham10000_lesions_are_its_lesion_ids(data_root):
    assert all(r.lesion == r.identifier for r in discover_pairs(data_root / "isic2018"))
    ham = discover_pairs(data_root / "ham10000")
    assert all(r.lesion.startswith("HAM_") for r in ham)
    assert len({r.lesion for r in ham}) < len(ham), "several photos of one lesion share its lesion_id"


def test_an_image_is_read_as_the_service_reads_an_upload(data_root, tmp_path):
    record = discover_pairs(data_root / "isic2018")[0]
    rgb = read_image(record.image_path)
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3
    assert np.array_equal(rgb, np.asarray(Image.open(record.image_path).convert("RGB")))
    # A camera's EXIF turn is applied, as the service applies it: the stored pixels come out upright.
    turned = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    Image.fromarray(rgb).save(turned, exif=exif, quality=100, subsampling=0)
    upright = read_image(turned)
    assert upright.shape == (rgb.shape[1], rgb.shape[0], 3)
    assert np.abs(upright.astype(int) - np.rot90(rgb, k=-1).astype(int)).mean() < 3


def test_isic_masks_above_128_are_lesion():
    assert truth_from_mask(np.array([[0, 128, 129, 255]], np.uint8)).tolist() == [[False, False, True, True]]


def test_the_mask_cut_makes_the_truth(data_root):
    record = discover_pairs(data_root / "isic2018")[0]
    mask = read_mask(record.mask_path)
    assert np.array_equal(read_truth(record.mask_path), mask > MASK_CUT)
    assert 0 < read_truth(record.mask_path).mean() < 1
