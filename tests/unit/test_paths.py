"""Paths built from ids stay under their root; only marked folders are ever removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from grid.core.errors import UnsafeInputError
from grid.core.naming import check_id, check_ids
from grid.core.paths import OWNER_FILE, claim_dir, owned_by, remove_claimed, under


@pytest.mark.parametrize("part", ["..", "../x", "../../../../etc", "/etc", "a/../../b", "."])
def test_under_refuses_what_leaves_the_root(tmp_path: Path, part: str) -> None:
    with pytest.raises(UnsafeInputError, match="escapes its root"):
        under(tmp_path / "root", part)


def test_under_refuses_a_symlink_out(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafeInputError):
        under(tmp_path / "root", "link")


def test_under_resolves_an_inside_path(tmp_path: Path) -> None:
    root = tmp_path / "a" / ".." / "root"
    assert under(root, "node-1") == (tmp_path / "root" / "node-1")


def test_remove_claimed_removes_only_the_owners_folder(tmp_path: Path) -> None:
    mine, other, unmarked = tmp_path / "mine", tmp_path / "other", tmp_path / "unmarked"
    claim_dir(mine, "node-1")
    claim_dir(other, "node-2")
    unmarked.mkdir()
    (unmarked / "keep").write_text("x")
    assert remove_claimed(mine, "node-1") and not mine.exists()
    assert not remove_claimed(other, "node-1") and (other / OWNER_FILE).exists()
    assert not remove_claimed(unmarked, "node-1") and (unmarked / "keep").exists()
    assert not remove_claimed(tmp_path / "missing", "node-1")


def test_a_symlink_to_a_marked_folder_is_not_owned(tmp_path: Path) -> None:
    claim_dir(tmp_path / "real", "node-1")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert owned_by(tmp_path / "real", "node-1")
    assert not owned_by(tmp_path / "link", "node-1")


@pytest.mark.parametrize("bad", ["../x", "/some/dir", "", "A", "a\n", 3, None, ["a"], "a" * 64])
def test_check_id_refuses(bad: object) -> None:
    with pytest.raises(UnsafeInputError, match="not a valid id"):
        check_id(bad)


def test_check_ids() -> None:
    assert check_ids(["a-1", "b"]) == ["a-1", "b"]
    for bad in ("abc", {"a": 1}, None, ["ok", "../x"]):
        with pytest.raises(UnsafeInputError):
            check_ids(bad)
