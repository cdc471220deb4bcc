"""Inputs of a batch job: a folder's images, or a manifest's paths, each with a unique identifier."""

import csv
from pathlib import Path

import pytest

from lesionseg.batch.inputs import JobImage, list_inputs


def test_a_folder_gives_its_images_in_order_and_ignores_other_files(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.PNG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    items = list_inputs(tmp_path)
    assert [item.identifier for item in items] == ["a", "b"]
    assert items[0].path == str((tmp_path / "a.PNG").resolve())


def test_a_folder_gives_its_dicom_files_by_suffix_or_by_their_first_bytes(tmp_path: Path) -> None:
    """A PACS export names its files IM000001, with no suffix: those that begin as DICOM does are pictures."""
    dicom = bytes(128) + b"DICM" + bytes(64)
    (tmp_path / "IM000001").write_bytes(dicom)
    (tmp_path / "lesion.dcm").write_bytes(dicom)
    (tmp_path / "README").write_text("not a picture")
    (tmp_path / "notes.txt").write_bytes(dicom)  # a suffix that says it is not a picture is believed
    assert [item.identifier for item in list_inputs(tmp_path)] == ["IM000001", "lesion"]


def test_a_manifest_reads_paths_relative_to_itself_and_optional_identifiers(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,identifier\nimages/one.jpg,\n/elsewhere/two.jpg,patient-7\n")
    items = list_inputs(manifest)
    assert [(item.identifier, item.path) for item in items] == [
        ("one", str((tmp_path / "images" / "one.jpg").resolve())),
        ("patient-7", "/elsewhere/two.jpg"),
    ]


def test_a_manifest_without_a_path_column_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("file\na.jpg\n")
    with pytest.raises(ValueError, match="no `path` column"):
        list_inputs(manifest)


def test_a_second_input_with_the_same_identifier_is_refused_rather_than_overwriting_the_first(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path\nfirst/lesion.jpg\nsecond/lesion.jpg\nthird/LESION.jpg\n")
    items = list_inputs(manifest)
    assert items[0].problem is None and items[0].path.endswith("first/lesion.jpg")
    # Case-insensitive file systems (macOS, Windows) would give LESION and lesion one mask file.
    assert all("same output files as 'lesion'" in item.problem for item in items[1:])


@pytest.mark.parametrize(
    ("identifier", "words"),
    [
        ("../../escaped", "path separator"),
        ("./dup", "path separator"),
        ("a\\b", "path separator"),
        ("x" * 300, "longer than 128"),
        ("é" * 110, "200 bytes"),
        ("nul\x00byte", "control"),
        ("right\u202eto-left", "invisible formatting"),
        ("..", "starts with a dot"),
        (".hidden", "starts with a dot"),
    ],
)
def test_an_identifier_that_is_not_one_safe_file_name_becomes_a_refused_input(
    tmp_path: Path, identifier: str, words: str
) -> None:
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as stream:
        csv.writer(stream).writerows([["path", "identifier"], ["image.jpg", identifier], ["other.jpg", "fine"]])
    refused, valid = list_inputs(manifest)
    assert words in refused.problem
    assert refused.identifier.isprintable() and len(refused.identifier) <= 161
    assert valid == JobImage("fine", str((tmp_path / "other.jpg").resolve()))


def test_unicode_forms_of_one_name_collide(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,identifier\na.jpg,caf\u00e9\nb.jpg,cafe\u0301\n", encoding="utf-8")
    first, second = list_inputs(manifest)
    assert first.problem is None and "same output files" in second.problem


def test_a_path_with_a_nul_byte_is_refused_alone(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,identifier\nbad\x00.jpg,bad\ngood.jpg,good\n")
    bad, good = list_inputs(manifest)
    assert bad.problem == "the path cannot be used as a file name" and "\\x00" in bad.path
    assert good.problem is None


def test_a_missing_input_says_what_it_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a folder of images nor a manifest"):
        list_inputs(tmp_path / "absent")
