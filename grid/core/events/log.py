"""EventLog: what every component uses to record events and read them back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from grid.core import naming
from grid.core.events.ids import Bounds, parse_id
from grid.core.events.model import (
    EVENT_TYPES,
    FIELDS,
    NOT_STORED,
    Event,
    EventType,
    decode_event,
    encode,
)
from grid.core.events.query import Filters, select
from grid.core.events.store import ID, KV, SEP, EventStore, all_index_keys
from grid.core.events.writer import BufferedWriter
from grid.core.rtypes import Redis
from grid.core.settings import Settings

DEFAULT_MAXLEN: int = Settings.model_fields["events_maxlen"].default
DEFAULT_RETENTION: float = Settings.model_fields["events_retention"].default


class EventLog:
    """The event log on one Redis client.

    Unbuffered (the default), `emit` stores and indexes the event in one atomic call before
    it returns. With `buffered=True`, `emit` only appends to an in-process buffer that a
    thread writes out in batches; call `flush()` to wait for it and `close()` at shutdown.
    """

    def __init__(
        self,
        client: Redis,
        maxlen: int = DEFAULT_MAXLEN,
        *,
        retention: float = DEFAULT_RETENTION,
        buffered: bool = False,
        batch_size: int = 1000,
        flush_interval: float = 0.05,
        capacity: int = 100_000,
    ) -> None:
        self.client = client
        self.maxlen = maxlen
        self.store = EventStore(client, maxlen, retention)
        self.writer = (
            BufferedWriter(self.store, batch_size, flush_interval, capacity) if buffered else None
        )

    @classmethod
    def from_settings(cls, client: Redis, settings: Settings, buffered: bool = False) -> EventLog:
        return cls(
            client,
            settings.events_maxlen,
            retention=settings.events_retention,
            buffered=buffered,
            batch_size=settings.events_batch_size,
            flush_interval=settings.events_flush_interval,
        )

    # ---- writing ------------------------------------------------------------------------

    def emit(
        self,
        type: EventType | str,
        message: str = "",
        *,
        agent_id: str = "",
        node_id: str = "",
        pool: str = "",
        pipe: Any = None,
        **data: Any,
    ) -> None:
        """Record an event (or only publish it, for heartbeats). With `pipe` (a pipeline of
        this log's Redis) the event is queued on it and written when the caller executes it."""
        etype = EventType(type)
        for subject in (agent_id, node_id, pool):
            if SEP in subject or KV in subject or ID in subject:
                raise ValueError(f"bad event subject {subject!r}: control characters")
        values = encode(etype.value, time.time(), message, agent_id, node_id, pool, data)
        if etype in NOT_STORED:
            target = pipe if pipe is not None else self.client
            target.publish(
                naming.events_live_channel(), json.dumps(dict(zip(FIELDS, values, strict=True)))
            )
        elif pipe is not None or self.writer is None:
            self.store.add_one(values, pipe)
        elif not self.writer.put(values) and self.writer.closed:
            self.store.add_one(values)  # after close(): written at once, never lost

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every buffered event is written (True at once when unbuffered)."""
        return self.writer.flush(timeout) if self.writer is not None else True

    def close(self, timeout: float = 10.0) -> None:
        """Write out the buffer and stop the writer thread (nothing to do when unbuffered)."""
        if self.writer is not None:
            self.writer.close(timeout)

    def trim(self) -> None:
        """Apply retention (time, then the length cap) to the stream and every index now.
        Writers apply it as they write; this is for a log nobody writes to any more."""
        self.store.trim(all_index_keys(EVENT_TYPES))

    # ---- reading ------------------------------------------------------------------------

    def read(
        self,
        types: set[str] | None = None,
        agent_id: str | None = None,
        node_id: str | None = None,
        pool: str | None = None,
        since: float | None = None,
        limit: int = 100,
        *,
        before: str | None = None,
        after: str | None = None,
    ) -> list[Event]:
        """Up to `limit` matching events, oldest first: the newest ones below `before` (an
        event id, exclusive), or, given only `after`, the oldest ones past that id.
        Raises ConfigError on a bad cursor or a `since` before 1970."""
        bounds = Bounds.of(since=since, after=after, before=before)
        filters = Filters(frozenset(types or ()), agent_id, node_id, pool)
        newest_first = not (after is not None and before is None)
        found = select(self.store, filters, bounds, limit, newest_first)
        return found[::-1] if newest_first else found

    def follow(
        self, after: str = "$", block_ms: int = 1000, **filters: Any
    ) -> Iterator[Event | None]:
        """Yield new events as they arrive; yields None on each idle `block_ms`."""
        if after != "$":
            parse_id(after, "--after cursor")
        match = Filters(
            frozenset(filters.get("types") or ()),
            filters.get("agent_id"),
            filters.get("node_id"),
            filters.get("pool"),
        )
        last = after
        while True:
            resp = self.client.xread({self.store.key: last}, block=block_ms, count=100)
            if not resp:
                yield None
                continue
            for event_id, fields in resp[0][1]:
                last = event_id
                ev = decode_event(event_id, fields)
                if ev is not None and match.matches(ev):
                    yield ev
