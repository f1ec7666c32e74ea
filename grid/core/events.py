"""The event log: a bounded Redis Stream with a typed catalogue.

Every component records what happened through `emit`; `grid events` reads it back.
Heartbeats are too frequent to keep: they are published live but not stored.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from grid.core import naming
from grid.core.rtypes import Redis

log = logging.getLogger(__name__)


class EventType(StrEnum):
    AGENT_REGISTERED = "agent_registered"
    AGENT_UNREGISTERED = "agent_unregistered"
    AGENT_HEARTBEAT = "agent_heartbeat"
    AGENT_DEGRADED = "agent_degraded"
    AGENT_OFFLINE = "agent_offline"
    AGENT_RECOVERED = "agent_recovered"
    AGENT_DRAINING = "agent_draining"
    AGENT_UNDRAINED = "agent_undrained"
    SPAWN_REQUESTED = "spawn_requested"
    SPAWN_SUCCEEDED = "spawn_succeeded"
    SPAWN_FAILED = "spawn_failed"
    STOP_REQUESTED = "stop_requested"
    STOP_SUCCEEDED = "stop_succeeded"
    STOP_FAILED = "stop_failed"
    NODE_CRASHED = "node_crashed"
    NODE_RESTARTED = "node_restarted"
    NODE_FAILED = "node_failed"
    NODE_LOST = "node_lost"
    NODE_ADOPTED = "node_adopted"
    NODE_FENCED = "node_fenced"
    CLUSTER_HEALTHY = "cluster_healthy"
    CLUSTER_DEGRADED = "cluster_degraded"
    CLUSTER_CRITICAL = "cluster_critical"
    SCALE_REQUESTED = "scale_requested"
    CAPACITY_SHORTFALL = "capacity_shortfall"
    LEADER_ELECTED = "leader_elected"
    PROCESS_RESTARTED = "process_restarted"  # a child of `grid up` died and was started again
    SCALING_DECISION = "scaling_decision"
    SECURITY_VIOLATION = "security_violation"  # an unsafe id or path refused (UnsafeInputError)


EVENT_TYPES = tuple(e.value for e in EventType)
NOT_STORED = frozenset({EventType.AGENT_HEARTBEAT})
LIVE_CHANNEL = f"{naming.PREFIX}:events:live"


class Event(BaseModel):
    """One entry of the event stream; its fields are the stream entry's fields as text."""

    model_config = ConfigDict(extra="ignore")

    type: str
    ts: float = 0.0
    message: str = ""
    agent_id: str = ""
    node_id: str = ""
    pool: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    id: str = ""

    @field_validator("data", mode="before")
    @classmethod
    def _data_from_json(cls, value: Any) -> Any:
        return json.loads(value or "{}") if isinstance(value, str) else value

    def to_fields(self) -> dict[str, str]:
        return {
            "type": self.type,
            "ts": repr(self.ts),
            "message": self.message,
            "agent_id": self.agent_id,
            "node_id": self.node_id,
            "pool": self.pool,
            "data": json.dumps(self.data, separators=(",", ":"), default=str),
        }

    @classmethod
    def from_fields(cls, event_id: str, fields: dict[str, str]) -> Event:
        """The event of a stream entry; raises ValidationError if it is malformed."""
        return cls.model_validate({**fields, "id": event_id})

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def decode_event(event_id: str, fields: dict[str, str]) -> Event | None:
    """The event of a stream entry, or None with a warning: one bad entry must not break
    `grid events`, the pages or a follower."""
    try:
        return Event.from_fields(event_id, fields)
    except (ValidationError, ValueError) as exc:
        log.warning("skipping malformed event %s: %s", event_id, exc)
        return None


class EventLog:
    def __init__(self, client: Redis, maxlen: int = 100_000) -> None:
        self.client = client
        self.maxlen = maxlen

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
        """Record an event (or only publish it, for heartbeats). Pass `pipe` to batch."""
        etype = EventType(type)
        event = Event(
            type=etype.value,
            ts=time.time(),
            message=message,
            agent_id=agent_id,
            node_id=node_id,
            pool=pool,
            data=data,
        )
        target = pipe if pipe is not None else self.client
        if etype in NOT_STORED:
            target.publish(LIVE_CHANNEL, json.dumps(event.to_fields()))
            return
        target.xadd(naming.events_key(), event.to_fields(), maxlen=self.maxlen, approximate=True)

    def read(
        self,
        types: set[str] | None = None,
        agent_id: str | None = None,
        node_id: str | None = None,
        pool: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """The newest `limit` events matching the filters, oldest first."""
        start = f"{int(since * 1000)}-0" if since else "-"
        out: list[Event] = []
        end = "+"
        batch = max(limit * 4, 500)
        while len(out) < limit:
            rows = self.client.xrevrange(naming.events_key(), max=end, min=start, count=batch)
            if not rows:
                break
            for event_id, fields in rows:
                ev = decode_event(event_id, fields)
                if ev is not None and _matches(ev, types, agent_id, node_id, pool):
                    out.append(ev)
                    if len(out) >= limit:
                        break
            if len(rows) < batch:
                break
            end = "(" + rows[-1][0]
        out.reverse()
        return out

    def follow(
        self, after: str = "$", block_ms: int = 1000, **filters: Any
    ) -> Iterator[Event | None]:
        """Yield new events as they arrive; yields None on each idle `block_ms`."""
        last = after
        while True:
            resp = self.client.xread({naming.events_key(): last}, block=block_ms, count=100)
            if not resp:
                yield None
                continue
            for event_id, fields in resp[0][1]:
                last = event_id
                ev = decode_event(event_id, fields)
                if ev is not None and _matches(ev, **filters):
                    yield ev


def _matches(
    ev: Event,
    types: set[str] | None = None,
    agent_id: str | None = None,
    node_id: str | None = None,
    pool: str | None = None,
) -> bool:
    if types and ev.type not in types:
        return False
    if agent_id and ev.agent_id != agent_id:
        return False
    if node_id and ev.node_id != node_id:
        return False
    return not (pool and ev.pool != pool)
