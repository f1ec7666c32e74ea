"""Paths built from ids, kept under their root, and folders removed only by their owner.

Every filesystem path Grid builds from an id (a node's folder, a unit file, an agent's
home) goes through `under`, which resolves it (symlinks and `..` included) and refuses it
unless it stays strictly inside the resolved root. A folder Grid creates for a node is
marked with an owner file (`claim_dir`), and `remove_claimed` deletes only a folder that
carries the mark of that same node: stopping an unknown node never deletes anything.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from grid.core.errors import UnsafeInputError

OWNER_FILE = ".grid-owner"

log = logging.getLogger(__name__)


def under(root: Path, *parts: str) -> Path:
    """`root / parts` resolved; UnsafeInputError unless strictly inside the resolved root."""
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if path == base or not path.is_relative_to(base):
        raise UnsafeInputError(f"path {'/'.join(parts)!r} escapes its root {base}")
    return path


def claim_dir(path: Path, owner: str) -> None:
    """Create `path` (if needed) and mark it as `owner`'s, so `remove_claimed` may delete it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / OWNER_FILE).write_text(owner)


def owned_by(path: Path, owner: str) -> bool:
    """True if `path` is a real folder (not a symlink) marked as `owner`'s."""
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        return (path / OWNER_FILE).read_text() == owner
    except (OSError, UnicodeDecodeError):
        return False


def remove_claimed(path: Path, owner: str) -> bool:
    """Delete the folder `path` if `claim_dir` marked it as `owner`'s; True if it did."""
    if not owned_by(path, owner):
        if path.exists():
            log.warning("not removing %s: it is not marked as %s's", path, owner)
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True
