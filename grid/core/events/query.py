"""Answering a filtered read: pick the smallest index that covers the filters, walk it, and
fetch and check only the events it names. Without a filter, walk the stream itself."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from grid.core.events.ids import Bounds
from grid.core.events.model import Event, decode_event
from grid.core.events.store import EventStore, index_of


@dataclass(frozen=True)
class Filters:
    types: frozenset[str] = field(default_factory=frozenset)
    agent_id: str | None = None
    node_id: str | None = None
    pool: str | None = None

    def matches(self, ev: Event) -> bool:
        if self.types and ev.type not in self.types:
            return False
        if self.agent_id and ev.agent_id != self.agent_id:
            return False
        if self.node_id and ev.node_id != self.node_id:
            return False
        return not (self.pool and ev.pool != self.pool)

    def sources(self) -> list[tuple[list[str], str]]:
        """Each way to narrow the search: (index keys whose union covers it, stored value)."""
        out = []
        if self.types:
            out.append(([index_of("type", t)[0] for t in sorted(self.types)], ""))
        for dimension, value in (
            ("agent", self.agent_id),
            ("node", self.node_id),
            ("pool", self.pool),
        ):
            if value:
                key, stored = index_of(dimension, value)
                out.append(([key], stored))
        return out


def select(
    store: EventStore, filters: Filters, bounds: Bounds, limit: int, newest_first: bool
) -> list[Event]:
    """Up to `limit` matching events within bounds, the newest (or, with `newest_first`
    False, the oldest) ones, in the order walked."""
    if limit <= 0 or bounds.empty:
        return []
    out: list[Event] = []
    for ev in _candidates(store, filters, bounds, newest_first):
        if filters.matches(ev):
            out.append(ev)
            if len(out) >= limit:
                break
    return out


def _candidates(
    store: EventStore, filters: Filters, bounds: Bounds, newest_first: bool
) -> Iterator[Event]:
    sources = filters.sources()
    if not sources:
        for event_id, fields in store.scan(bounds, newest_first):
            ev = decode_event(event_id, fields)
            if ev is not None:
                yield ev
        return
    sizes = store.sizes([k for keys, _ in sources for k in keys])
    costs, at = [], 0
    for keys, _ in sources:
        costs.append(sum(sizes[at : at + len(keys)]))
        at += len(keys)
    keys, stored = sources[costs.index(min(costs))]
    ids = store.index_ids(keys, stored, bounds, newest_first)
    chunk = 16
    while True:
        batch = [i for _, i in zip(range(chunk), ids, strict=False)]
        for event_id, fields in store.fetch(batch):
            ev = decode_event(event_id, fields)
            if ev is not None:
                yield ev
        if len(batch) < chunk:
            return
        chunk = min(chunk * 2, 512)
