"""Inputs of a batch job: a folder's images, or a manifest's paths, each with a unique identifier."""

from pathlib import Path

import pytest

from lesionseg.batch.inputs import list_inputs


def test_a_folder_gives_its_images_in_order_and_ignores_other_files(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.PNG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    items = list_inputs(tmp_path)
    assert [item.identifier for item in items] == ["a", "b"]
    assert items[0].path == str((tmp_path / "a.PNG").resolve())


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


def test_two_inputs_with_one_identifier_are_refused_rather_than_overwriting_each_other(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path\nfirst/lesion.jpg\nsecond/lesion.jpg\n")
    with pytest.raises(ValueError, match="'lesion' is used by both"):
        list_inputs(manifest)


def test_a_missing_input_says_what_it_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a folder of images nor a manifest"):
        list_inputs(tmp_path / "absent")
