"""Writing backup pieces into Redis: each key rebuilt with its TTL.

The caller empties the target of every key a backup may hold first (`service`), so each
key is built from nothing. Commands go out in pipelines of about `BATCH` commands per
Redis (on Redis Cluster the pipeline routes each command to its key's shard); a line of
stream entries is one script call (`restore_stream.lua`), not a command per entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from grid.core.backup.dump import RawRedis
from grid.core.backup.format import Key, Piece
from grid.core.scripts import lua_source

BATCH = 2000  # commands per pipeline round trip
_STREAM_SCRIPT = lua_source("restore_stream.lua")


class _Batches:
    """One open pipeline per Redis client (roles on one Redis share it)."""

    def __init__(self, clients: dict[str, RawRedis]) -> None:
        self.clients = clients
        self.pipes: dict[int, Any] = {}
        self.queued: dict[int, int] = {}

    def pipe(self, role: str) -> Any:
        client = self.clients[role]
        key = id(client)
        if key not in self.pipes:
            self.pipes[key] = client.pipeline(transaction=False)
            self.queued[key] = 0
        self.queued[key] += 1
        if self.queued[key] >= BATCH:
            self.pipes[key].execute()
            self.queued[key] = 1
        return self.pipes[key]

    def flush(self) -> None:
        for pipe in self.pipes.values():
            pipe.execute()


def load(pieces: Iterable[Piece], clients: dict[str, RawRedis]) -> int:
    """Write every piece on its role's client; the number of keys written."""
    batches = _Batches(clients)
    current: tuple[str, Key] | None = None
    entries = 0  # stream entries written for the current key
    keys = 0
    for piece in pieces:
        if (piece.role, piece.key) != current:
            current, entries = (piece.role, piece.key), 0
        for args in _commands(piece):
            batches.pipe(piece.role).execute_command(*args)
        entries += len(piece.items) if piece.type == "stream" else 0
        if piece.end is not None:
            for args in _finish(piece, entries):
                batches.pipe(piece.role).execute_command(*args)
            keys += 1
    batches.flush()
    return keys


def _commands(piece: Piece) -> list[tuple[Any, ...]]:
    key, items = piece.key, piece.items
    if not items:
        return []
    if piece.type == "string":
        return [("SET", key, items[0])]
    if piece.type == "list":
        return [("RPUSH", key, *items)]
    if piece.type == "set":
        return [("SADD", key, *items)]
    if piece.type == "zset":
        return [("ZADD", key, *(x for member, score in items for x in (score, member)))]
    if piece.type == "hash":
        return [("HSET", key, *(x for pair in items for x in pair))]
    flat: list[Any] = []  # stream: id, count, fields of each entry
    for entry_id, fields in items:
        flat += (entry_id, len(fields), *fields)
    return [("EVAL", _STREAM_SCRIPT, 1, key, *flat)]


def _finish(piece: Piece, stream_entries: int) -> list[tuple[Any, ...]]:
    """A stream's last id and groups (an empty stream is made by adding and deleting its
    last id), then the TTL."""
    assert piece.end is not None
    key, end = piece.key, piece.end
    done: list[tuple[Any, ...]] = []
    if piece.type == "stream":
        last_id = str(end.get("last_id") or "0-0")
        if stream_entries:
            done.append(("XSETID", key, last_id))
        elif last_id != "0-0":
            done += [("XADD", key, last_id, "-", "-"), ("XDEL", key, last_id)]
        for name, delivered in end.get("groups") or []:
            done.append(("XGROUP", "CREATE", key, name, delivered, "MKSTREAM"))
    ttl = end.get("ttl_ms")
    if isinstance(ttl, int) and ttl > 0:
        done.append(("PEXPIRE", key, ttl))
    return done
