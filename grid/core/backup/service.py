"""Taking a backup of a grid's Redis, and restoring one: what `grid backup` and the master's
scheduled backups call.

The state and events roles may be two Redis servers (or Redis Clusters): a backup reads
each one once and records which role every key came from; a restore writes each key on its
role's Redis. When one Redis serves both roles, a key's role is told by its name
(`grid.core.naming.in_events_role`), so such a backup restores onto split roles too.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from grid import __version__
from grid.core import naming
from grid.core.backup.dump import RawRedis, dump, keep_raw_streams, scan_keys
from grid.core.backup.files import (
    BodyStats,
    backup_name,
    read_header,
    read_pieces,
    verify,
    write_backup,
)
from grid.core.backup.format import FORMAT, ROLES, VERSION, Header, Piece, Trigger
from grid.core.backup.load import load
from grid.core.backup.scope import role_of
from grid.core.connection import connect_url, mask_url, redis_client, role_url
from grid.core.errors import ConfigError, GridError
from grid.core.settings import Settings

Progress = Callable[[int, int], None]  # called with the keys and lines done so far
PROGRESS_LINES = 100  # lines between two calls


@dataclass
class Stores:
    """The raw (bytes) client of each role; roles on one Redis share one client."""

    urls: dict[str, str]
    clients: dict[str, RawRedis]

    @property
    def shared(self) -> bool:
        return self.urls["state"] == self.urls["events"]

    def distinct(self) -> list[tuple[str, RawRedis]]:
        """(URL, client) of each Redis once."""
        return list({self.urls[r]: self.clients[r] for r in ROLES}.items())

    def close(self) -> None:
        for _, client in self.distinct():
            client.close()


def open_stores(settings: Settings) -> Stores:
    """Clients for the state and events roles; RedisUnavailableError (exit 2) if one does
    not answer."""
    urls = {role: role_url(settings, role) for role in ROLES}  # type: ignore[arg-type]
    by_url: dict[str, RawRedis] = {}
    for url in urls.values():
        if url not in by_url:
            connect_url(url).close()  # fails now, in one line, when it does not answer
            by_url[url] = keep_raw_streams(cast(RawRedis, redis_client(url, decode=False)))
    return Stores(urls, {role: by_url[url] for role, url in urls.items()})


def _all_pieces(stores: Stores) -> Iterator[Piece]:
    if stores.shared:
        yield from dump(stores.clients["state"], role_of)
        return
    for role in ROLES:
        yield from dump(stores.clients[role], _fixed(role))


def _fixed(role: str) -> Callable[[str], str]:
    """Every key found on this role's own Redis belongs to that role."""

    def role_of_key(_name: str) -> str:
        return role

    return role_of_key


def _counting(pieces: Iterable[Piece], progress: Progress | None) -> Iterator[Piece]:
    """The pieces, telling `progress` how many keys and lines went through."""
    keys = lines = 0
    for piece in pieces:
        yield piece
        lines += 1
        keys += piece.end is not None
        if progress is not None and lines % PROGRESS_LINES == 0:
            progress(keys, lines)
    if progress is not None:
        progress(keys, lines)


@dataclass(frozen=True)
class Created:
    path: Path
    header: Header
    seconds: float


def create_backup(
    settings: Settings,
    folder: Path,
    trigger: Trigger = "manual",
    progress: Progress | None = None,
) -> Created:
    """Write a backup of every Grid key of the state and events Redis into `folder`."""
    started = time.monotonic()
    created = time.time()
    stores = open_stores(settings)
    try:

        def header(sha256: str, stats: BodyStats) -> Header:
            return Header(
                format=FORMAT,
                version=VERSION,
                grid_version=__version__,
                created=created,
                trigger=trigger,
                source={role: mask_url(url) for role, url in stores.urls.items()},
                keys={role: (stats.keys or {}).get(role, 0) for role in ROLES},
                types=dict(sorted((stats.types or {}).items())),
                lines=stats.lines,
                sha256=sha256,
            )

        salt = ""
        while True:
            try:
                path = write_backup(
                    folder,
                    backup_name(created, trigger, salt),
                    _counting(_all_pieces(stores), progress),
                    header,
                )
                break
            except FileExistsError:  # another backup in the same millisecond
                salt = f"-{secrets.token_hex(2)}"
            except (PermissionError, NotADirectoryError) as exc:
                raise ConfigError(f"cannot write a backup in {folder}: {exc.strerror}") from None
            except OSError as exc:  # a full disk, an I/O error: the operation failed
                raise GridError(f"writing a backup in {folder} failed: {exc}") from None
    finally:
        stores.close()
    return Created(path, read_header(path), time.monotonic() - started)


@dataclass(frozen=True)
class Restored:
    header: Header
    keys: int
    replaced: int  # Grid keys the target held before, deleted first
    resumed: bool  # an interrupted restore of the same backup was finished
    seconds: float


def present_keys(stores: Stores) -> list[tuple[str, bytes]]:
    """(URL, key) of every Grid key the target holds that a restore would replace."""
    return [(url, key) for url, client in stores.distinct() for key in scan_keys(client)]


def restore_backup(
    settings: Settings,
    path: Path,
    force: bool = False,
    progress: Progress | None = None,
) -> Restored:
    """Restore `path` into the configured Redis (see docs/BACKUPS.md).

    The whole file is verified first (every line, the checksum, the counts) and the target
    checked: a bad file, or a target holding Grid keys without `force`, raises ConfigError
    (exit 2) before anything is written. A restore marks its progress in `grid:restore`;
    one that was interrupted is finished by running it again, `force` or not."""
    started = time.monotonic()
    header = verify(path)
    stores = open_stores(settings)
    try:
        state = stores.clients["state"]
        marker = {k.decode(): v.decode() for k, v in state.hgetall(naming.restore_key()).items()}
        resumed = marker.get("status") == "running" and marker.get("sha256") == header.sha256
        present = present_keys(stores)
        if present and not (force or resumed):
            url, key = present[0]
            raise ConfigError(
                f"Redis at {mask_url(url)} already holds {len(present)} Grid key(s) (such as "
                f"{key.decode(errors='replace')}): restore into an empty Redis, or pass "
                "--force to replace them with the backup"
            )
        state.hset(
            naming.restore_key(),
            mapping={
                "status": "running",
                "sha256": header.sha256,
                "file": path.name,
                "started": repr(time.time()),
            },
        )
        for url, client in stores.distinct():
            doomed = [key for u, key in present if u == url]
            for start in range(0, len(doomed), 1000):
                pipe = client.pipeline(transaction=False)
                for key in doomed[start : start + 1000]:
                    pipe.unlink(key)
                pipe.execute()
        keys = load(_counting(read_pieces(path), progress), stores.clients)
        state.hset(naming.restore_key(), mapping={"status": "done", "finished": repr(time.time())})
    finally:
        stores.close()
    return Restored(header, keys, len(present), resumed, time.monotonic() - started)
