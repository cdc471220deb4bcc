import functools
import io
import logging
import pickle

import cv2
import numpy as np
import pytest
from PIL import Image, TiffImagePlugin
from tests.hostile_files import encapsulated_postscript, png_with_exif_tags, tiff_with_pages

from lesionseg.imaging.decode import (
    ImageRejected,
    StreamedPicture,
    decode_upload,
    reduce_in_bands,
    rgb_bands,
    streamed_picture,
    to_rgb,
)

LIMITS = {"max_pixels": 64_000_000, "min_side": 16}


@pytest.fixture(scope="module")
def lesion(real_image_path) -> Image.Image:
    return Image.open(real_image_path).convert("RGB")


def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA"])
def test_odd_modes_become_8_bit_rgb(lesion, mode):
    if mode == "I;16":  # a true 16-bit picture uses the whole 0-65535 range
        image = Image.fromarray(np.asarray(lesion.convert("L")).astype(np.uint16) * 257)
    else:
        image = lesion.convert(mode)
    format = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    decoded = decode_upload(encoded(image, format), **LIMITS)
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape == (lesion.height, lesion.width, 3)
    assert decoded.rgb.std() > 5, "the picture survived the conversion"


def test_16_bit_is_rescaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    decoded = decode_upload(encoded(Image.fromarray(ramp), "PNG"), **LIMITS)
    assert decoded.rgb[..., 0].min() == 0 and decoded.rgb[..., 0].max() == 255
    assert len(np.unique(decoded.rgb)) > 200


def test_exif_rotation_is_honoured(lesion):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    decoded = decode_upload(encoded(lesion.resize((300, 200)), "JPEG", exif=exif), **LIMITS)
    assert decoded.rgb.shape[:2] == (300, 200)
    assert (decoded.original_width, decoded.original_height) == (200, 300)


def png_chunks(data: bytes) -> list[bytes]:
    """A PNG's chunks, each whole (length, type, data, checksum), after its signature."""
    chunks, position = [], 8
    while position < len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        chunks.append(data[position : position + 12 + length])
        position += 12 + length
    return chunks


def test_a_png_whose_exif_follows_its_pixels_is_turned_too(lesion):
    """The PNG format lets EXIF come after the pixel data, where Pillow reaches it only by decoding the
    picture; the chunks are walked instead, and the picture is turned all the same."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encoded(lesion.resize((300, 200)), "PNG", exif=exif)
    chunks = png_chunks(data)
    exif_chunk = next(chunk for chunk in chunks if chunk[4:8] == b"eXIf")
    others = [chunk for chunk in chunks if chunk is not exif_chunk]
    assert [chunk[4:8] for chunk in chunks].index(b"eXIf") < [chunk[4:8] for chunk in chunks].index(b"IDAT")
    exif_last = data[:8] + b"".join(others[:-1]) + exif_chunk + others[-1]  # before IEND
    assert "exif" not in Image.open(io.BytesIO(exif_last)).info  # Pillow has not reached it from the header
    decoded = decode_upload(exif_last, **LIMITS)
    assert decoded.rgb.shape[:2] == (300, 200)
    assert np.array_equal(decoded.rgb, decode_upload(data, **LIMITS).rgb)


def test_large_jpeg_is_decoded_at_reduced_scale_but_reports_its_size(lesion):
    big = lesion.resize((4000, 3000))
    decoded = decode_upload(encoded(big, "JPEG", quality=90), draft_size=384, **LIMITS)
    assert (decoded.original_width, decoded.original_height) == (4000, 3000)
    assert 384 <= min(decoded.rgb.shape[:2]) < 3000


@pytest.mark.parametrize("orientation", [1, 6, 3])
def test_a_large_picture_shown_at_its_size_is_kept_in_its_own_mode_and_drawn_by_bands(lesion, orientation):
    """With `keep_photo`, a picture the model needs far fewer pixels of is reduced for the model and kept,
    in its own mode, for drawing: its RGB bands join into what a whole decode gives, turned as EXIF says,
    and the model's picture is turned the same way."""
    big = lesion.resize((1000, 750)).convert("P", palette=Image.Palette.ADAPTIVE)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(big, "PNG", exif=exif)
    whole = decode_upload(data, **LIMITS)  # no draft size: the whole picture, as before
    decoded = decode_upload(data, draft_size=100, keep_photo=True, **LIMITS)
    assert decoded.photo is not None
    photo = np.concatenate([band for _, band in decoded.photo_bands()])
    assert np.array_equal(photo, whole.rgb)
    assert (decoded.original_width, decoded.original_height) == (whole.rgb.shape[1], whole.rgb.shape[0])
    reduced = cv2.resize(whole.rgb, decoded.rgb.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert 200 <= max(decoded.rgb.shape[:2]) < 400
    assert np.abs(reduced.astype(int) - decoded.rgb.astype(int)).mean() < 2  # the same picture, turned alike
    assert decode_upload(data, draft_size=100, **LIMITS).photo is None  # nothing kept that no output shows


@pytest.mark.parametrize("mode", ["P", "RGB", "RGBA"])
def test_reducing_by_bands_is_reducing_the_whole_picture(lesion, mode):
    picture = lesion.resize((997, 1203)).convert(mode)
    reduced = reduce_in_bands(functools.partial(rgb_bands, picture), picture.size, 7)
    assert np.array_equal(np.asarray(reduced), np.asarray(to_rgb(picture).reduce(7)))


@pytest.mark.parametrize(
    ("format", "mode", "options"),
    [
        ("PNG", "L", {}),
        ("PNG", "LA", {}),
        ("PNG", "RGB", {}),
        ("PNG", "RGBA", {}),
        ("PNG", "I;16", {}),
        ("JPEG", "L", {"quality": 90}),
        ("JPEG", "RGB", {"quality": 90}),
        ("TIFF", "RGB", {"compression": "tiff_adobe_deflate"}),
        ("TIFF", "RGBA", {"compression": "tiff_lzw"}),
        ("TIFF", "RGB", {"compression": "jpeg"}),
        ("TIFF", "F", {"compression": "tiff_adobe_deflate"}),
        ("TIFF", "I", {"compression": "tiff_lzw"}),
        ("WEBP", "RGB", {"quality": 80}),
        ("WEBP", "RGBA", {"lossless": True}),
    ],
)
def test_a_large_picture_is_read_by_bands_as_the_same_picture(lesion, format, mode, options):
    """libvips reads a large PNG, TIFF or WebP, or a JPEG shown at its own size, a band at a time: the photo's
    bands join into Pillow's whole decode, bit for bit, and the model's picture is its box reduction, bit for
    bit (a WebP's within a level or two)."""
    picture = lesion.resize((1000, 750)).convert("L" if mode in ("I;16", "F", "I") else mode)
    if mode in ("I;16", "F", "I"):  # the whole 16-bit range, with values between the 8-bit levels
        values = np.asarray(picture).astype(np.uint16) * 257 + 100
        picture = Image.fromarray(values.astype({"I;16": np.uint16, "F": np.float32, "I": np.int32}[mode]))
    if mode in ("LA", "RGBA"):  # a transparent corner, which becomes white
        picture.putalpha(
            Image.fromarray(np.where(np.arange(750)[:, None] + np.arange(1000) < 300, 0, 255).astype(np.uint8))
        )
    data = encoded(picture, format, **options)
    opened = Image.open(io.BytesIO(data))
    assert isinstance(streamed_picture(data, opened, draft_size=100, keep_photo=True), StreamedPicture)
    whole = decode_upload(data, **LIMITS)  # Pillow, the whole picture at once
    decoded = decode_upload(data, draft_size=100, keep_photo=True, **LIMITS)
    assert np.array_equal(np.concatenate([band for _, band in decoded.photo_bands()]), whole.rgb)
    boxes = np.asarray(Image.fromarray(whole.rgb).reduce(5))
    if format == "WEBP":  # scaled by libwebp as it decodes: averages over areas, not the boxes' exact bits
        assert decoded.rgb.shape == boxes.shape and np.abs(decoded.rgb.astype(int) - boxes).mean() < 2
    else:
        assert np.array_equal(decoded.rgb, boxes)


def test_a_large_picture_exif_turns_is_read_by_bands_and_the_models_copy_turned(lesion):
    """Only the model's small copy is needed, so it is made by bands and then turned: the whole picture
    turned and then reduced, bit for bit (the boxes tile the picture exactly either way)."""
    turned = Image.Exif()
    turned[0x0112] = 6
    data = encoded(lesion.resize((1000, 750)), "PNG", exif=turned)
    opened = Image.open(io.BytesIO(data))
    assert isinstance(streamed_picture(data, opened, draft_size=100, keep_photo=False), StreamedPicture)
    whole = decode_upload(data, **LIMITS)  # Pillow: decoded whole, then turned
    decoded = decode_upload(data, draft_size=100, **LIMITS)
    assert (decoded.original_width, decoded.original_height) == (750, 1000)
    assert np.array_equal(decoded.rgb, np.asarray(Image.fromarray(whole.rgb).reduce(5)))


@pytest.mark.parametrize("orientation", range(2, 9))
def test_a_large_photo_exif_turns_is_shown_turned_as_pillow_turns_it(lesion, orientation):
    """libvips turns a photo shown at its size as Pillow does, for each EXIF orientation, bit for bit."""
    turned = Image.Exif()
    turned[0x0112] = orientation
    data = encoded(lesion.resize((1000, 750)), "JPEG", quality=90, exif=turned)
    whole = decode_upload(data, **LIMITS)  # Pillow: decoded whole, then turned
    decoded = decode_upload(data, draft_size=100, keep_photo=True, **LIMITS)
    assert isinstance(streamed_picture(data, Image.open(io.BytesIO(data)), 100, keep_photo=True), StreamedPicture)
    assert np.array_equal(np.concatenate([band for _, band in decoded.photo_bands()]), whole.rgb)
    assert np.array_equal(decoded.rgb, np.asarray(Image.fromarray(whole.rgb).reduce(5)))


def test_pictures_libvips_would_read_otherwise_than_pillow_are_left_to_pillow(lesion):
    """A palette PNG (one byte a pixel in Pillow already), a CMYK JPEG, a 16-bit colour PNG (8 bits in Pillow),
    a JPEG no output shows at its size (decoded small in JPEG's draft mode) and a picture the model takes
    whole are not read by bands."""
    picture = lesion.resize((1000, 750))
    colour_16_bit = cv2.imencode(".png", np.asarray(picture).astype(np.uint16) * 257)[1].tobytes()
    left_to_pillow = [
        (encoded(picture.convert("P"), "PNG"), True, 100),
        (encoded(picture.convert("CMYK"), "JPEG"), True, 100),
        (colour_16_bit, True, 100),
        (encoded(picture, "JPEG"), False, 100),
        (encoded(picture, "PNG"), True, 384),
    ]
    for data, keep_photo, draft_size in left_to_pillow:
        opened = Image.open(io.BytesIO(data))
        assert streamed_picture(data, opened, draft_size, keep_photo) is None, opened.mode


@pytest.mark.parametrize("format", ["PNG", "JPEG"])
def test_a_damaged_large_picture_read_by_bands_is_refused_before_inference(lesion, format):
    data = encoded(lesion.resize((1000, 750)), format)
    with pytest.raises(ImageRejected) as caught:
        decode_upload(data[: len(data) // 2], draft_size=100, keep_photo=True, **LIMITS)
    assert caught.value.status_code == 400 and caught.value.message == "the image data is truncated or corrupt"


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"hello, this is text", 415, "not an image"),
        (b"%PDF-1.4\n", 415, "not an image"),
    ],
)
def test_non_images_are_rejected(data, status, words):
    with pytest.raises(ImageRejected) as caught:
        decode_upload(data, **LIMITS)
    assert caught.value.status_code == status and words in caught.value.message


def test_truncated_jpeg_is_rejected(lesion):
    data = encoded(lesion, "JPEG")
    with pytest.raises(ImageRejected) as caught:
        decode_upload(data[: len(data) // 2], **LIMITS)
    assert caught.value.status_code == 400 and "truncated" in caught.value.message


def test_too_many_pixels_is_refused_from_the_header():
    # A real 20000×20000 PNG header, compressed to almost nothing.
    bomb = encoded(Image.new("1", (20000, 20000)), "PNG")
    assert len(bomb) < 200_000
    with pytest.raises(ImageRejected) as caught:
        decode_upload(bomb, max_pixels=50_000_000, min_side=16)
    assert caught.value.status_code == 413


def test_tiny_images_are_refused():
    with pytest.raises(ImageRejected) as caught:
        decode_upload(encoded(Image.new("RGB", (1, 1)), "PNG"), **LIMITS)
    assert caught.value.status_code == 422


def test_animations_are_refused(lesion):
    frames = [lesion.resize((64, 64)), lesion.resize((64, 64)).rotate(90)]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageRejected) as caught:
        decode_upload(data, **LIMITS)
    assert caught.value.status_code == 415 and "multi-frame" in caught.value.message


@pytest.mark.parametrize("format", ["ICO", "PCX", "TGA", "PPM", "SGI", "IM", "DDS"])
def test_formats_outside_the_allow_list_are_never_opened(lesion, format):
    with pytest.raises(ImageRejected) as caught:
        decode_upload(encoded(lesion.resize((64, 64)), format), **LIMITS)
    assert caught.value.status_code == 415 and "not an image format we can read" in caught.value.message


def test_encapsulated_postscript_is_refused_before_any_program_runs():
    with pytest.raises(ImageRejected) as caught:
        decode_upload(encapsulated_postscript(), **LIMITS)
    assert caught.value.status_code == 415


def test_a_tiff_of_100000_pages_is_refused_after_as_few_page_reads_as_one_of_two(monkeypatch):
    """Work counted, not timed: how many pages Pillow is asked to seek to, whatever the machine's speed."""
    seeks = []
    real_seek = TiffImagePlugin.TiffImageFile._seek

    def counted_seek(image, frame):
        seeks.append(frame)
        return real_seek(image, frame)

    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "_seek", counted_seek)
    counts = []
    for data in (tiff_with_pages(2), tiff_with_pages(100_000)):
        seeks.clear()
        with pytest.raises(ImageRejected, match="multi-frame"):
            decode_upload(data, **LIMITS)
        counts.append(len(seeks))
    assert counts[1] == counts[0], counts  # counting the pages one by one took 100,000 seeks


def test_a_single_page_tiff_is_a_still_image():
    assert decode_upload(tiff_with_pages(1), **LIMITS).rgb.shape == (64, 64, 3)


def test_a_camera_mpo_is_read_as_its_primary_picture(lesion):
    data = encoded(lesion, "MPO", save_all=True, append_images=[lesion.resize((lesion.width // 2, lesion.height // 2))])
    decoded = decode_upload(data, **LIMITS)
    assert decoded.rgb.shape == (lesion.height, lesion.width, 3)


def test_exif_warnings_are_counted_on_this_thread_and_never_printed(lesion, capfd):
    data = png_with_exif_tags(encoded(lesion, "PNG"), 65_000)
    decoded = decode_upload(data, **LIMITS)
    assert decoded.rgb.shape == (lesion.height, lesion.width, 3)
    captured = capfd.readouterr()
    assert "Tag data larger than file" not in captured.err + captured.out


def test_libvips_warnings_are_counted_in_one_line_and_never_printed(lesion, capfd, caplog):
    """A JPEG damaged in many places, large and shown at its size, is read by libvips, which warns as it
    decodes: the warnings become one line of the decoder's, once, though the photo is read twice."""
    data = bytearray(encoded(lesion.resize((1000, 750)), "JPEG", quality=90))
    for position in range(2000, len(data) - 100, 997):
        data[position] = 0xFF if data[position] != 0xFF else 0x00
    with caplog.at_level(logging.INFO):
        decoded = decode_upload(bytes(data), draft_size=100, keep_photo=True, **LIMITS)
        assert sum(1 for _ in decoded.photo_bands()) > 1
    warned = [record for record in caplog.records if record.getMessage() == "the image decoder warned"]
    assert len(warned) == 1 and warned[0].fields["warnings"] >= 1
    assert "libvips: " in warned[0].fields["first"][0]
    assert not [record for record in caplog.records if record.name == "pyvips"]
    captured = capfd.readouterr()
    assert "Corrupt JPEG" not in captured.err + captured.out


def test_a_corrupt_image_is_described_in_our_words(lesion):
    data = encoded(lesion, "PNG")
    with pytest.raises(ImageRejected) as caught:
        decode_upload(data[: len(data) // 2], **LIMITS)
    assert caught.value.message == "the image data is truncated or corrupt"


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_an_orientation_exif_does_not_define_is_upright_on_both_readers(lesion, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(lesion.resize((1000, 750)), "JPEG", quality=90, exif=exif)
    plain = decode_upload(encoded(lesion.resize((1000, 750)), "JPEG", quality=90), **LIMITS)
    decoded = decode_upload(data, draft_size=100, keep_photo=True, **LIMITS)  # libvips, by bands
    assert (decoded.original_width, decoded.original_height) == (1000, 750)
    assert np.array_equal(np.concatenate([band for _, band in decoded.photo_bands()]), plain.rgb)
    assert np.array_equal(decode_upload(data, **LIMITS).rgb, plain.rgb)  # Pillow, whole


def test_a_rejection_keeps_its_status_and_words_across_processes():
    """A batch job's encoding processes hand errors back pickled; the default would rebuild it from the message
    alone, and fail."""
    rejected = pickle.loads(pickle.dumps(ImageRejected(413, "the file is larger than 20 MB")))
    assert (rejected.status_code, rejected.message) == (413, "the file is larger than 20 MB")
