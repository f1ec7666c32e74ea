"""Reading keys out of Redis as backup pieces, type by type, with their TTLs.

Keys are found with SCAN (on Redis Cluster, on every primary: redis-py's `scan_iter` walks
each one), read in pipelined batches; each key is read whole in one command (a stream in
pages of `CHUNK` entries), so a key is consistent in itself. A backup is not one instant of
the whole store: Redis has no such read short of its own snapshot, which is tied to its
version. Grid is level-triggered, so a restored grid converges from what it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

import redis

from grid.core.backup.format import CHUNK, Piece, enc
from grid.core.backup.scope import PATTERN, exclusion
from grid.core.rtypes import is_cluster

if TYPE_CHECKING:
    RawRedis: TypeAlias = redis.Redis[bytes]
else:
    RawRedis = Any

BATCH = 200  # keys per pipelined round trip

# A key's name -> the role it is restored to.
RoleOf = Callable[[str], str]


def keep_raw_streams(client: RawRedis) -> RawRedis:
    """XRANGE replies as Redis sends them: redis-py's parser folds an entry into a dict,
    which loses a field named twice. On Redis Cluster replies are parsed by each node's
    client, so each known node gets it (a node found later gives dicts: `_flat` reads them)."""
    targets: list[Any] = [client]
    if is_cluster(client):
        targets = [node.redis_connection for node in client.get_nodes()]  # type: ignore[attr-defined]
    for target in targets:
        if target is not None:
            target.set_response_callback("XRANGE", _unparsed)
    return client


def _unparsed(response: Any, **_: Any) -> Any:
    return response


def _flat(fields: Any) -> list[Any]:
    """An entry's fields and values as one list, from a raw reply or a parsed dict."""
    if isinstance(fields, dict):
        return [x for pair in fields.items() for x in pair]
    return list(fields)


def scan_keys(client: RawRedis) -> Iterator[bytes]:
    """Every key under `grid:` a backup holds (see `scope`), on every primary."""
    for key in client.scan_iter(match=PATTERN, count=1000):
        if exclusion(key.decode(errors="replace")) is None:
            yield key


def dump(client: RawRedis, role_of: RoleOf) -> Iterator[Piece]:
    """The pieces of every key of this Redis, each under the role `role_of(name)` gives."""
    batch: list[bytes] = []
    for key in scan_keys(client):
        batch.append(key)
        if len(batch) >= BATCH:
            yield from _dump_batch(client, batch, role_of)
            batch = []
    if batch:
        yield from _dump_batch(client, batch, role_of)


def _dump_batch(client: RawRedis, keys: list[bytes], role_of: RoleOf) -> Iterator[Piece]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    types = [t.decode() if isinstance(t, bytes) else str(t) for t in pipe.execute()]
    pipe = client.pipeline(transaction=False)
    for key, type_ in zip(keys, types, strict=True):
        _queue_read(pipe, key, type_)
        pipe.pttl(key)
    replies = iter(pipe.execute(raise_on_error=False))
    for key, type_ in zip(keys, types, strict=True):
        value, ttl = next(replies), next(replies)
        if type_ not in READS or isinstance(value, Exception) or isinstance(ttl, Exception):
            continue  # gone (or retyped) between SCAN and now: nothing to keep
        if ttl == -2:
            continue  # expired in between
        role = role_of(key.decode(errors="replace"))
        yield from _pieces(client, key, role, type_, value, int(ttl))


def _queue_read(pipe: Any, key: bytes, type_: str) -> None:
    if type_ == "string":
        pipe.get(key)
    elif type_ == "list":
        pipe.lrange(key, 0, -1)
    elif type_ == "set":
        pipe.smembers(key)
    elif type_ == "zset":
        pipe.zrange(key, 0, -1, withscores=True, score_cast_func=bytes)
    elif type_ == "hash":
        pipe.hgetall(key)
    else:
        pipe.exists(key)  # a stream is paged below; an unknown type is skipped


READS = {"string", "list", "set", "zset", "hash", "stream"}


def _items(type_: str, value: Any) -> list[Any]:
    if type_ == "string":
        return [enc(value)]
    if type_ == "list":
        return [enc(v) for v in value]
    if type_ == "set":
        return [enc(v) for v in sorted(value)]
    if type_ == "zset":
        return [[enc(m), s.decode()] for m, s in value]
    return [[enc(f), enc(v)] for f, v in value.items()]  # hash


def _pieces(
    client: RawRedis, key: bytes, role: str, type_: str, value: Any, ttl: int
) -> Iterator[Piece]:
    end: dict[str, Any] = {"ttl_ms": ttl if ttl > 0 else None}
    if type_ == "stream":
        yield from _stream_pieces(client, key, role, end)
        return
    items = _items(type_, value)
    for start in range(0, max(len(items), 1), CHUNK):
        last = start + CHUNK >= len(items)
        yield Piece(key, role, type_, items[start : start + CHUNK], end if last else None)


def _stream_pieces(client: RawRedis, key: bytes, role: str, end: dict[str, Any]) -> Iterator[Piece]:
    """Entries in pages (exclusive start after the last id read), then the stream's last id
    and its consumer groups (their names and last delivered ids; pending entries are not
    kept: a consumer of a restored grid starts from its group's position)."""
    low = b"-"
    page: list[Any] = []
    pending: Piece | None = None
    while True:
        page = client.execute_command("XRANGE", key, low, "+", "COUNT", CHUNK)
        if not page:
            break
        if pending is not None:
            yield pending
        pending = Piece(
            key,
            role,
            "stream",
            [[eid.decode(), [enc(x) for x in _flat(fields)]] for eid, fields in page],
        )
        low = b"(" + page[-1][0]
        if len(page) < CHUNK:
            break
    try:
        info = client.xinfo_stream(key)
        groups = client.xinfo_groups(key)  # type: ignore[no-untyped-call]
    except redis.ResponseError:  # deleted while we read it: keep what was read
        info, groups = {}, []
    last_id = info.get("last-generated-id", b"0-0")
    end["last_id"] = last_id.decode() if isinstance(last_id, bytes) else str(last_id)
    end["groups"] = [[enc(g["name"]), _text(g["last-delivered-id"])] for g in groups]
    piece = pending or Piece(key, role, "stream", [])
    piece.end = end
    yield piece


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
