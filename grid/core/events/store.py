"""How events sit in Redis: the stream, its indexes, retention. See grid.core.events."""

from __future__ import annotations

import functools
import heapq
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import hiredis
import redis

from grid.core import naming
from grid.core.events.ids import Bounds, StreamId, format_id, parse_id
from grid.core.events.model import FIELDS, INDEXED
from grid.core.rtypes import Redis, is_cluster
from grid.core.scripts import LuaScript, lua_source

# Hashed index streams per subject dimension (agent, node, pool). A query for one agent or
# node walks one bucket (1/64 of the events); more buckets mean more index entries per batch.
BUCKETS = 64
EXACT = frozenset({"type"})  # dimensions with one index stream per value (a closed catalogue)
SEP, KV = "\x1f", "\x1e"  # between index items; between an item's event id and its value
ID = "\x1d"  # marks where events_index.lua puts an event id
PAGE = 500  # index entries (or stream entries) read per round trip


@functools.lru_cache(maxsize=65536)
def index_of(dimension: str, value: str) -> tuple[str, str]:
    """(index key, the value stored with each item) of one indexed field value: an exact key
    and no value for event types; a hashed bucket holding the value for subjects."""
    if dimension in EXACT:
        return naming.events_index_key(dimension, value), ""
    bucket = zlib.crc32(value.encode()) % BUCKETS
    return naming.events_index_key(dimension, str(bucket)), value


def all_index_keys(types: Iterable[str]) -> list[str]:
    """Every index key that can exist (for trimming and checks)."""
    keys = [naming.events_index_key("type", t) for t in types]
    for dimension, _ in INDEXED:
        if dimension not in EXACT:
            keys += [naming.events_index_key(dimension, str(b)) for b in range(BUCKETS)]
    return keys


def indexes_of(values: Sequence[str]) -> list[tuple[str, str]]:
    """The (index key, stored value) pairs an event with these FIELDS values belongs to."""
    return [index_of(dim, values[pos]) for dim, pos in INDEXED if values[pos]]


class EventStore:
    """The stream `naming.events_key()` and its index streams, on one client."""

    def __init__(self, client: Redis, maxlen: int, retention: float) -> None:
        self.client = client
        self.maxlen = maxlen
        self.retention = retention
        self.key = naming.events_key()
        self._append = LuaScript(lua_source("events_common.lua", "events_append.lua"), client)
        self._index_source = lua_source("events_common.lua", "events_index.lua")

    def _min_id_ms(self) -> int:
        return max(0, int((time.time() - self.retention) * 1000))

    # ---- writing ------------------------------------------------------------------------

    def add_one(self, values: Sequence[str], pipe: Any = None) -> Any:
        """Store and index one event in one atomic call (queued on `pipe` when given)."""
        pairs = indexes_of(values)
        keys = [self.key, *(k for k, _ in pairs)]
        args: list[Any] = [self.maxlen, self._min_id_ms(), len(FIELDS), *FIELDS, *values]
        args += [v for _, v in pairs]
        return self._append(keys=keys, args=args, client=pipe)

    def add_batch(self, batch: Sequence[Sequence[str]]) -> list[str]:
        """Store and index a batch in one MULTI (one round trip, atomic: nothing of another
        writer comes between the XADDs and their index entries). The new ids, oldest first."""
        if not batch:
            return []
        groups: dict[str, list[str]] = {}
        last: dict[str, int] = {}
        for pos, values in enumerate(batch, start=1):
            for key, value in indexes_of(values):
                groups.setdefault(key, []).append(
                    f"{ID}{pos}{KV}{value}" if value else f"{ID}{pos}"
                )
                last[key] = pos
        commands: list[Any] = [("MULTI",)]
        commands += [
            ("XADD", self.key, "*", *[x for pair in zip(FIELDS, values, strict=True) for x in pair])
            for values in batch
        ]
        # EVAL, not EVALSHA: a script missing after a Redis restart would fail inside EXEC
        keys = [self.key, *groups]
        args: list[Any] = [len(batch)]
        for key, items in groups.items():
            args += [SEP.join(items), last[key]]
        commands.append(("EVAL", self._index_source, len(keys), *keys, *args))
        commands.append(("XTRIM", self.key, "MAXLEN", "~", self.maxlen))
        commands.append(("XTRIM", self.key, "MINID", "~", self._min_id_ms()))
        commands.append(("EXEC",))
        replies = self._send(commands)[-1]
        if not isinstance(replies, list):
            raise redis.ResponseError(f"event batch not written: {replies!r}")
        errors = [r for r in replies if isinstance(r, Exception)]
        if errors:
            raise redis.ResponseError(f"event batch: {errors[0]}")
        return [str(event_id) for event_id in replies[: len(batch)]]

    def _send(self, commands: Sequence[Any]) -> list[Any]:
        """Commands sent in one write, packed by hiredis, and every reply read back (an error
        reply raises; errors inside EXEC's reply are returned in it). redis-py's own
        pipeline spends ~10 µs a command checking arguments before hiredis packs them."""
        client: Any = self.client
        if is_cluster(client):  # every event key is in one slot: that slot's node
            client = client.get_node_from_key(self.key).redis_connection
        pool = client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(hiredis.pack_command(c) for c in commands)])
            return [conn.read_response() for _ in commands]
        except BaseException:
            conn.disconnect()  # replies may be left unread: never reuse this connection
            raise
        finally:
            pool.release(conn)

    def trim(self, index_keys: Iterable[str]) -> None:
        """Apply retention to the stream and to every index key now (writers do it as they go)."""
        pipe: Any = self.client.pipeline(transaction=False)
        pipe.execute_command("XTRIM", self.key, "MAXLEN", "~", self.maxlen)
        pipe.execute_command("XTRIM", self.key, "MINID", "~", self._min_id_ms())
        pipe.execute_command("XRANGE", self.key, "-", "+", "COUNT", 1)
        first = pipe.execute()[2]
        floor = first[0][0] if first else "0-1"
        pipe = self.client.pipeline(transaction=False)
        for key in index_keys:
            pipe.execute_command("XTRIM", key, "MINID", "~", floor)
        pipe.execute()

    # ---- reading ------------------------------------------------------------------------

    def fetch(self, ids: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
        """The entries of these ids that the stream still holds, in the order given."""
        pipe = self.client.pipeline(transaction=False)
        for event_id in ids:
            pipe.xrange(self.key, min=event_id, max=event_id, count=1)
        return [rows[0] for rows in pipe.execute() if rows]

    def scan(self, bounds: Bounds, newest_first: bool) -> Iterator[tuple[str, dict[str, str]]]:
        """Every stream entry within `bounds`, page by page."""
        low, high = bounds.redis_min(), bounds.redis_max()
        while True:
            if newest_first:
                rows = self.client.xrevrange(self.key, max=high, min=low, count=PAGE)
            else:
                rows = self.client.xrange(self.key, min=low, max=high, count=PAGE)
            yield from rows
            if len(rows) < PAGE:
                return
            if newest_first:
                high = "(" + rows[-1][0]
            else:
                low = "(" + rows[-1][0]

    def sizes(self, keys: Sequence[str]) -> list[int]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.xlen(key)
        return [int(n) for n in pipe.execute()]

    def index_ids(
        self, keys: Sequence[str], value: str, bounds: Bounds, newest_first: bool
    ) -> Iterator[str]:
        """Ids listed in any of `keys` (with this stored value) within `bounds`, in order."""
        streams = [self._index_items(k, value, bounds, newest_first) for k in keys]
        merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, reverse=newest_first)
        for _, event_id in merged:
            yield event_id

    def _index_items(
        self, key: str, value: str, bounds: Bounds, newest_first: bool
    ) -> Iterator[tuple[StreamId, str]]:
        """(sid, id) of the items of one index key within bounds. Entry k lists the events in
        (entry k-1, entry k], so only the first entry at or past a bound can straddle it."""
        needle = KV + value + SEP if value else ""
        for entry_id, payload in self._index_entries(key, bounds, newest_first):
            if needle and needle not in payload + SEP:
                continue  # most entries of a bucket hold other values: skip without splitting
            items = payload.split(SEP)
            for item in reversed(items) if newest_first else items:
                event_id, _, stored = item.partition(KV)
                if stored == value and bounds.holds(sid := parse_id(event_id)):
                    yield sid, event_id
            if not newest_first and bounds.high is not None and parse_id(entry_id) >= bounds.high:
                return  # later entries list only later events

    def _index_entries(
        self, key: str, bounds: Bounds, newest_first: bool
    ) -> Iterator[tuple[str, str]]:
        """(entry id, items) of the entries of one index key that can hold events in bounds."""
        low = bounds.redis_min()
        if newest_first:
            high = "+"
            if bounds.high is not None:  # the entry that straddles `high`, then those below
                straddler = self.client.xrange(key, min=format_id(bounds.high), max="+", count=1)
                yield from ((i, f.get("ids", "")) for i, f in straddler)
                high = "(" + format_id(bounds.high)
            while True:  # entries below `low` list only events below it
                rows = self.client.xrevrange(key, max=high, min=low, count=PAGE)
                yield from ((i, f.get("ids", "")) for i, f in rows)
                if len(rows) < PAGE:
                    return
                high = "(" + rows[-1][0]
        else:
            start = low
            while True:
                rows = self.client.xrange(key, min=start, max="+", count=PAGE)
                yield from ((i, f.get("ids", "")) for i, f in rows)
                if len(rows) < PAGE:
                    return
                start = "(" + rows[-1][0]
