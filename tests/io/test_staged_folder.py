"""StagedFolder: a folder is moved into place whole, or not at all (the one folder-level atomic write)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sista_monai.io.files import StagedFolder


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones included) by relative path, with its text."""
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _old(destination: Path) -> None:
    (destination / "sub").mkdir(parents=True)
    (destination / "a.txt").write_text("old a")
    (destination / "other.txt").write_text("old other")
    (destination / "sub" / "x.txt").write_text("old x")


def _new(staging: Path) -> None:
    (staging / "sub").mkdir()
    (staging / "a.txt").write_text("new a")
    (staging / "sub" / "y.txt").write_text("new y")


def test_a_new_folder_appears_complete_with_nothing_left_beside_it(tmp_path: Path) -> None:
    destination = tmp_path / "out" / "dataset"
    with StagedFolder(destination) as staging:
        assert staging.parent == destination.parent and staging.name.startswith(".dataset.staging-")
        _new(staging)
        assert not destination.exists()  # nothing visible until the block ends
    assert _tree(destination) == {"a.txt": "new a", "sub/y.txt": "new y"}
    assert sorted(p.name for p in destination.parent.iterdir()) == ["dataset"]


def test_by_default_the_staged_folder_replaces_the_old_one_whole(tmp_path: Path) -> None:
    destination = tmp_path / "dataset"
    _old(destination)
    with StagedFolder(destination) as staging:
        _new(staging)
    assert _tree(destination) == {"a.txt": "new a", "sub/y.txt": "new y"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_merge_replaces_only_the_entries_it_has(tmp_path: Path) -> None:
    destination = tmp_path / "prepared"
    _old(destination)
    with StagedFolder(destination, merge=True) as staging:
        _new(staging)
    # a.txt replaced, sub/ replaced whole (x.txt gone), other.txt kept; no aside folder left in the destination
    assert _tree(destination) == {"a.txt": "new a", "other.txt": "old other", "sub/y.txt": "new y"}


@pytest.mark.parametrize("merge", [False, True])
def test_an_error_leaves_the_destination_as_it_was_and_removes_the_staging(tmp_path: Path, merge: bool) -> None:
    destination = tmp_path / "dataset"
    _old(destination)
    before = _tree(destination)
    with pytest.raises(RuntimeError, match="half way"):
        with StagedFolder(destination, merge=merge) as staging:
            _new(staging)
            raise RuntimeError("half way")
    assert _tree(destination) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_a_complete_folder_written_meanwhile_by_another_process_is_kept(tmp_path: Path) -> None:
    destination = tmp_path / "encoder"
    complete = lambda folder: (folder / "done.json").is_file()  # noqa: E731
    with StagedFolder(destination, keep=complete) as staging:
        (staging / "done.json").write_text("mine")
        destination.mkdir()  # the other process moved its folder in first
        (destination / "done.json").write_text("theirs")
    assert _tree(destination) == {"done.json": "theirs"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]
    with StagedFolder(destination, keep=lambda folder: False) as staging:  # not acceptable: replaced
        (staging / "done.json").write_text("mine")
    assert _tree(destination) == {"done.json": "mine"}


def test_the_folder_gets_the_usual_permissions(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        with StagedFolder(tmp_path / "shared") as staging:
            (staging / "f").write_text("x")
    finally:
        os.umask(previous)
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o750
