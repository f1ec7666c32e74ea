"""Backup files on disk: written whole or not at all, read back verified, listed, rotated.

A backup is written as two temporary files in its folder (the body, then the header plus
the body), fsynced and renamed into place, and the folder fsynced: a crash leaves at most
a hidden `.tmp` file, never a file with a backup's name that is not a whole backup. Files
are created with mode 0600 (a backup holds credential hashes and every record), folders 0700.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import shutil
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from grid.core.backup.format import (
    BadBackupError,
    Header,
    Piece,
    Trigger,
    parse_header,
    parse_piece,
)
from grid.core.settings import Settings

PREFIX = "grid-backup-"
SUFFIX = ".jsonl.gz"
SCHEDULED = "-scheduled"
TMP_SUFFIX = ".tmp"
STALE_TMP_SECONDS = 3600.0  # a temporary file this old is a crashed write: removed on rotation
COMPRESSLEVEL = 3  # JSON of records shrinks ~8x at level 3; higher levels cost time for little
_NAME_RE = re.compile(
    rf"^{PREFIX}(\d{{8}}T\d{{6}}\.\d{{3}}Z)(-[0-9a-f]{{4}})?({SCHEDULED})?{re.escape(SUFFIX)}$"
)
_STAMP = "%Y%m%dT%H%M%S"


def backup_dir(settings: Settings) -> Path:
    """GRID_BACKUP_DIR, else `backups/` in the grid home (beside the embedded Redis's data)."""
    return settings.backup_dir or settings.home / "backups"


def backup_name(created: float, trigger: Trigger, salt: str = "") -> str:
    moment = datetime.fromtimestamp(created, UTC)
    stamp = f"{moment.strftime(_STAMP)}.{moment.microsecond // 1000:03d}Z"
    return f"{PREFIX}{stamp}{salt}{SCHEDULED if trigger == 'scheduled' else ''}{SUFFIX}"


def name_time(name: str) -> float | None:
    """The creation time a backup's file name holds; None for any other name."""
    m = _NAME_RE.match(name)
    if not m:
        return None
    return datetime.strptime(m.group(1)[:-5], _STAMP).replace(tzinfo=UTC).timestamp() + (
        int(m.group(1)[-4:-1]) / 1000
    )


def is_scheduled(name: str) -> bool:
    m = _NAME_RE.match(name)
    return bool(m and m.group(3))


def _private_dir(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)


def _open_private(path: Path) -> int:
    return os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class BodyStats:
    lines: int = 0
    keys: dict[str, int] | None = None
    types: dict[str, int] | None = None


def write_backup(
    folder: Path,
    name: str,
    pieces: Iterable[Piece],
    make_header: Callable[[str, BodyStats], Header],
) -> Path:
    """Write `pieces` as the backup `folder/name` (see the module docstring); its path.

    `make_header(sha256, stats)` is called once the body is written."""
    _private_dir(folder)
    final = folder / name
    if final.exists():
        raise FileExistsError(f"backup {final} exists")
    body = folder / f".{name}.body{TMP_SUFFIX}"
    whole = folder / f".{name}{TMP_SUFFIX}"
    digest = hashlib.sha256()
    stats = BodyStats(keys={}, types={})
    assert stats.keys is not None and stats.types is not None
    try:
        with (
            os.fdopen(_open_private(body), "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=COMPRESSLEVEL, mtime=0) as out,
        ):
            for piece in pieces:
                line = piece.to_line()
                digest.update(line)
                out.write(line)
                stats.lines += 1
                if piece.end is not None:
                    stats.keys[piece.role] = stats.keys.get(piece.role, 0) + 1
                    stats.types[piece.type] = stats.types.get(piece.type, 0) + 1
        header = make_header(digest.hexdigest(), stats)
        with os.fdopen(_open_private(whole), "wb") as raw:
            # two gzip members, header then body: gzip readers see one stream
            raw.write(gzip.compress(header.model_dump_json().encode() + b"\n", mtime=0))
            with body.open("rb") as src:
                shutil.copyfileobj(src, raw, 1 << 20)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(whole, final)
        _fsync_dir(folder)
    finally:
        for tmp in (body, whole):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return final


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[gzip.GzipFile]:
    """The backup opened for reading; BadBackupError (one line) for any fault of the file."""
    try:
        with gzip.open(path, "rb") as stream:
            yield stream
    except FileNotFoundError:
        raise BadBackupError(f"no backup file {path}") from None
    except IsADirectoryError:
        raise BadBackupError(f"{path} is a folder, not a backup file") from None
    except PermissionError:
        raise BadBackupError(f"cannot read {path}: permission denied") from None
    except EOFError:
        raise BadBackupError(f"backup {path} is truncated (its gzip stream ends early)") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise BadBackupError(f"backup {path} is corrupt ({exc})") from None


def read_header(path: Path) -> Header:
    """The header alone (fast: nothing after the first line is read)."""
    with _reading(path) as stream:
        return parse_header(stream.readline())


def read_pieces(path: Path) -> Iterator[Piece]:
    """Every piece of the backup, checked as it is read. The checksum and counts are checked
    at the end, so a caller must consume the whole iterator before acting on any piece:
    `verify` does that."""
    with _reading(path) as stream:
        header = parse_header(stream.readline())
        digest = hashlib.sha256()
        lines = 0
        for number, line in enumerate(stream, start=2):
            digest.update(line)
            lines += 1
            if not line.endswith(b"\n"):
                raise BadBackupError(f"backup {path} is truncated (line {number} is cut)")
            try:
                yield parse_piece(line)
            except ValueError as exc:
                raise BadBackupError(f"backup {path} is corrupt (line {number}: {exc})") from None
        if digest.hexdigest() != header.sha256:
            raise BadBackupError(f"backup {path} is corrupt: its SHA-256 does not match its header")
        if lines != header.lines:
            raise BadBackupError(f"backup {path} is truncated: {lines} of {header.lines} lines")


def verify(path: Path) -> Header:
    """Read the whole backup once, checking every line, the checksum and the counts."""
    header = read_header(path)
    ends = 0
    for piece in read_pieces(path):
        ends += piece.end is not None
    if ends != header.total_keys:
        raise BadBackupError(
            f"backup {path} holds {ends} keys, its header says {header.total_keys}"
        )
    return header


@dataclass(frozen=True)
class Listed:
    path: Path
    header: Header | None
    problem: str = ""


def list_backups(folder: Path) -> list[Listed]:
    """Backups in `folder`, oldest first, each with its header (or what is wrong with it)."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if name_time(path.name) is None:
            continue
        try:
            found.append(Listed(path, read_header(path)))
        except BadBackupError as exc:
            found.append(Listed(path, None, str(exc)))
    return found


def newest_time(folder: Path, scheduled_only: bool = True) -> float | None:
    """When the newest backup in `folder` was made (by its name; None if there is none)."""
    if not folder.is_dir():
        return None
    times = [
        t
        for p in folder.iterdir()
        if (t := name_time(p.name)) is not None and (is_scheduled(p.name) or not scheduled_only)
    ]
    return max(times, default=None)


def rotate(folder: Path, keep: int, now: float | None = None) -> list[Path]:
    """Delete all but the `keep` newest scheduled backups (backups made by hand are never
    deleted) and temporary files older than an hour; the paths deleted."""
    now = time.time() if now is None else now
    scheduled = sorted((p for p in folder.iterdir() if is_scheduled(p.name)), key=lambda p: p.name)
    doomed = scheduled[: max(0, len(scheduled) - keep)]
    for path in folder.iterdir():
        if path.name.startswith(f".{PREFIX}") and path.name.endswith(TMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                if now - path.stat().st_mtime > STALE_TMP_SECONDS:
                    doomed.append(path)
    for path in doomed:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if doomed:
        _fsync_dir(folder)
    return doomed
