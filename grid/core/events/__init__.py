"""The event log: a Redis Stream with per-type and per-subject indexes, a typed catalogue.

Every component records what happened through `EventLog.emit`; `grid events` and the
master's pages read it back. Heartbeats are too frequent to keep: they are published live
(`naming.events_live_channel()`) but not stored.

Layout (all keys built in grid.core.naming; all share the hash tag ``{events}``):

- ``grid:{events}:stream``: every stored event, one entry each, its fields those of
  `model.FIELDS`; capped by length (`events_maxlen`, MAXLEN ~) and by age
  (`events_retention`, MINID ~), both applied by every write.
- ``grid:{events}:ix:type:<type>``: one index stream per event type (a closed catalogue).
- ``grid:{events}:ix:{agent,node,pool}:<bucket>``: 256 hashed index streams per subject
  dimension, so the number of keys stays fixed however many agents or nodes come and go (a
  stream per node id would cost ~2 KB of key overhead each and need sweeping).

An index entry lists the ids (and, in a bucket, the value) of the events of one write, oldest
first; entry k lists only events in (entry k-1, entry k]. So a read walks an index from a
cursor in either direction and needs the straddling entry only at its start. A query picks
the smallest index that covers its filters (XLEN), walks it, fetches the named entries by id,
and checks every filter on the event itself. Indexes are trimmed to the stream's oldest id,
so the cap and the retention apply to them too; an item older than that is skipped.

Writing: an unbuffered `emit` (and one given a caller's `pipe`) runs events_append.lua: XADD
plus its index entries in one atomic call. The buffered writer sends a batch as one MULTI of
plain XADDs (cheaper for Redis than XADDs from Lua) followed by events_index.lua, which reads
back the batch's ids and appends one index entry per key: one round trip, atomic, so index
entry ids only grow and no two writers' batches interleave.

Redis Cluster: the scripts and the MULTI touch the stream and its indexes together, so every
event key carries the ``{events}`` tag and lives in one slot (one shard holds the whole log;
events belong on the events/metrics Redis, not the state store). Every pipeline here holds
keys of that one slot only; the client is a plain (non-cluster) client of the Redis that
holds the slot.
"""

from __future__ import annotations

from grid.core import naming
from grid.core.events.check import check_indexes
from grid.core.events.log import EventLog
from grid.core.events.model import (
    EVENT_TYPES,
    FIELDS,
    NOT_STORED,
    Event,
    EventType,
    decode_event,
)

LIVE_CHANNEL = naming.events_live_channel()

__all__ = [
    "EVENT_TYPES",
    "FIELDS",
    "LIVE_CHANNEL",
    "NOT_STORED",
    "Event",
    "EventLog",
    "EventType",
    "check_indexes",
    "decode_event",
]
