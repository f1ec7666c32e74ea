"""The event catalogue and how one event is encoded as the fields of a stream entry."""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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
    BACKUP_CREATED = "backup_created"  # a scheduled backup was written (grid.core.backup)
    BACKUP_FAILED = "backup_failed"
    BACKUP_RESTORED = "backup_restored"  # written into the restored store, after the restore


EVENT_TYPES = tuple(e.value for e in EventType)
NOT_STORED = frozenset({EventType.AGENT_HEARTBEAT})

# The fields of a stream entry, in this order (every entry has all of them, so the stream
# stores the names once per listpack node). Positions 0 and 3-5 are the indexed ones.
FIELDS = ("type", "ts", "message", "agent_id", "node_id", "pool", "data")
# index dimension -> position in FIELDS of the value it indexes
INDEXED = (("type", 0), ("agent", 3), ("node", 4), ("pool", 5))


def encode(
    type: str,
    ts: float,
    message: str,
    agent_id: str,
    node_id: str,
    pool: str,
    data: dict[str, Any],
) -> list[str]:
    """The values of an entry's FIELDS: the one encoding every writer uses."""
    payload = json.dumps(data, separators=(",", ":"), default=str) if data else "{}"
    return [type, repr(ts), message, agent_id, node_id, pool, payload]


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
        values = encode(
            self.type, self.ts, self.message, self.agent_id, self.node_id, self.pool, self.data
        )
        return dict(zip(FIELDS, values, strict=True))

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
