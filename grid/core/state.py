"""Grid's state in Redis: agents, nodes, desired pool sizes, leases.

Records are Redis hashes (partial updates are atomic); every key comes from `grid.core.naming`.
Node updates only touch records that still exist, so an agent finishing late can never
resurrect a node the master has already removed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from enum import Enum, StrEnum
from importlib import resources
from typing import Any, TypeVar, get_origin

import psutil
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from grid.core import naming
from grid.core.errors import ConflictError
from grid.core.rtypes import Redis

log = logging.getLogger(__name__)


class NodeStatus(StrEnum):
    PENDING = "pending"  # placed by the master, not yet picked up by the agent
    STARTING = "starting"  # the agent is starting it
    RUNNING = "running"  # healthy
    RESTARTING = "restarting"  # crashed, waiting for its backoff
    STOPPING = "stopping"  # the master asked for it to stop
    FAILED = "failed"  # gave up (spawn failed or crash loop); to be replaced
    LOST = "lost"  # its agent went offline; to be replaced


ACTIVE_NODE_STATES = frozenset(
    {NodeStatus.PENDING, NodeStatus.STARTING, NodeStatus.RUNNING, NodeStatus.RESTARTING}
)


class AgentStatus(StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


class ClusterState(StrEnum):
    HEALTHY = "healthy"  # every agent online, every pool at size
    DEGRADED = "degraded"  # an agent not online, or a pool below size
    CRITICAL = "critical"  # no agent online, or a pool below half its size


R = TypeVar("R", bound="Record")
# node id -> (agent_id, generation, status) as stored; all None when the record is gone
Placements = dict[str, tuple[str | None, str | None, str | None]]


def encode_field(value: Any) -> str:
    """One hash field as text: dicts as JSON, booleans as 1/0, enums by value, None as ''."""
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Enum):
        return str(value.value)
    return "" if value is None else str(value)


class Record(BaseModel):
    """A pydantic model stored as a Redis hash: one text field per attribute.

    Decoding goes through pydantic's validation, so a malformed hash (`port abc`) raises
    `ValidationError`; GridState skips such records with a warning instead of failing a read.
    """

    model_config = ConfigDict(extra="ignore", use_enum_values=False)

    @model_validator(mode="before")
    @classmethod
    def _decode_text(cls, data: Any) -> Any:
        """Text from a hash: '' (and 'None' from older writers) means the default, JSON for
        dict fields; pydantic's lax mode turns the rest ('12', '1.5', '1') into their types."""
        if not isinstance(data, dict):
            return data
        decoded: dict[str, Any] = {}
        for name, value in data.items():
            info = cls.model_fields.get(name)
            if info is None:
                continue
            if isinstance(value, str):
                if value in ("", "None"):
                    continue
                if get_origin(info.annotation) is dict or info.annotation is dict:
                    value = json.loads(value)
            decoded[name] = value
        return decoded

    def to_hash(self) -> dict[str | bytes, bytes | float | int | str]:
        return {k: encode_field(getattr(self, k)) for k in type(self).model_fields}

    @classmethod
    def from_hash(cls: type[R], data: dict[str, str]) -> R:
        return cls.model_validate(data)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class AgentRecord(Record):
    agent_id: str
    hostname: str = ""
    platform: str = "process"
    max_nodes: int = 10
    labels: dict[str, str] = Field(default_factory=dict)
    cost: float = 0.0
    version: str = ""
    status: AgentStatus = AgentStatus.ONLINE
    draining: bool = False
    registered_at: float = 0.0
    last_heartbeat: float = 0.0
    node_count: int = 0
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    pid: int = 0
    down_since: float = 0.0  # last heartbeat before it went offline (for agent_recovered)


class NodeRecord(Record):
    node_id: str
    pool: str = naming.DEFAULT_POOL
    agent_id: str = ""
    status: NodeStatus = NodeStatus.PENDING
    generation: int = 0
    created_at: float = 0.0
    started_at: float = 0.0
    pid: int | None = None
    port: int = 0
    endpoint: str = ""
    restart_count: int = 0
    memory_mb: int | None = None
    error: str = ""
    platform: str = ""

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_NODE_STATES


def _lua(name: str) -> str:
    """A Lua script shipped beside this module in lua/ (package data)."""
    return resources.files("grid.core").joinpath("lua", f"{name}.lua").read_text()


def owner_token() -> str:
    """Identifies this process: hostname, pid and start time (so a reused pid never matches)."""
    start = psutil.Process(os.getpid()).create_time()
    return f"{socket.gethostname()}:{os.getpid()}:{start:.3f}"


def token_is_stale(token: str) -> bool:
    """True when `token` names a process on this host that no longer runs."""
    try:
        host, pid, start = token.rsplit(":", 2)
        if host != socket.gethostname():
            return False
        proc = psutil.Process(int(pid))
        return abs(proc.create_time() - float(start)) > 0.01
    except (ValueError, psutil.NoSuchProcess):
        return True
    except psutil.Error:
        return False


def decode_record(cls: type[R], key: str, data: dict[str, str]) -> R | None:
    """The record in a hash; None for an empty hash or, with a warning, a malformed one
    (one bad record must not break `grid nodes`, the pages or the master's passes)."""
    if not data:
        return None
    try:
        return cls.from_hash(data)
    except (ValidationError, ValueError) as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}" for e in _errors(exc)
        )
        log.warning("skipping malformed record %s: %s", key, problems)
        return None


def _errors(exc: Exception) -> list[Any]:
    if isinstance(exc, ValidationError):
        return list(exc.errors())
    return [{"loc": (), "msg": str(exc)}]


class GridState:
    def __init__(self, client: Redis) -> None:
        self.r = client
        self._update = client.register_script(_lua("update_if_exists"))
        self._renew = client.register_script(_lua("renew_lease"))
        self._release = client.register_script(_lua("release_lease"))

    # ---- agents ---------------------------------------------------------------------

    def claim_agent_id(self, agent_id: str, token: str, ttl: float) -> None:
        """Take the lock of an agent id, or raise ConflictError if a live agent holds it."""
        key = naming.agent_lock_key(agent_id)
        ttl_ms = int(ttl * 1000)
        if self.r.set(key, token, nx=True, px=ttl_ms):
            return
        holder = self.r.get(key)
        if holder == token or (holder and token_is_stale(holder)):
            self.r.set(key, token, px=ttl_ms)
            return
        raise ConflictError(f"agent id {agent_id!r} is held by a live agent ({holder})")

    def register_agent(self, record: AgentRecord) -> None:
        pipe = self.r.pipeline()
        pipe.hset(naming.agent_key(record.agent_id), mapping=record.to_hash())
        pipe.sadd(naming.agents_key(), record.agent_id)
        pipe.execute()

    def renew_agent_claim(self, agent_id: str, token: str, ttl: float) -> bool:
        """Extend our hold on the agent id; False if someone else holds it now."""
        key = naming.agent_lock_key(agent_id)
        if self._renew(keys=[key], args=[token, int(ttl * 1000)]):
            return True
        # The lock expired (e.g. Redis restarted and forgot it): take it back if free.
        return bool(self.r.set(key, token, nx=True, px=int(ttl * 1000)))

    def unregister_agent(self, agent_id: str, token: str) -> None:
        pipe = self.r.pipeline()
        pipe.delete(naming.agent_key(agent_id))
        pipe.srem(naming.agents_key(), agent_id)
        pipe.execute()
        self._release(keys=[naming.agent_lock_key(agent_id)], args=[token])

    def agent_exists(self, agent_id: str) -> bool:
        return bool(self.r.exists(naming.agent_key(agent_id)))

    def update_agent(self, agent_id: str, **values: Any) -> bool:
        return self._update_hash(naming.agent_key(agent_id), values)

    def agent(self, agent_id: str) -> AgentRecord | None:
        key = naming.agent_key(agent_id)
        return decode_record(AgentRecord, key, self.r.hgetall(key))

    def agents(self) -> list[AgentRecord]:
        ids = sorted(self.r.smembers(naming.agents_key()))
        return [r for r in self._load_many(ids, naming.agent_key, AgentRecord) if r]

    # ---- nodes ----------------------------------------------------------------------

    def next_generation(self) -> int:
        return int(self.r.incr(naming.generation_key()))

    def reserve_generations(self, count: int) -> int:
        """Reserve `count` generations; returns the one before the first reserved."""
        if count <= 0:
            return 0
        return int(self.r.incrby(naming.generation_key(), count)) - count

    def mark_stopping(self, node_id: str, pipe: Any) -> None:
        """Within a pipeline: the master asked the node to stop."""
        pipe.hset(naming.node_key(node_id), "status", NodeStatus.STOPPING.value)

    def placements(self, extra_ids: set[str]) -> Placements:
        """(agent_id, generation, status) of every node record and of `extra_ids` (whose record
        may be gone: None fields), in one pipelined read."""
        ids = sorted(set(self.r.smembers(naming.nodes_key())) | extra_ids)
        pipe = self.r.pipeline(transaction=False)
        for nid in ids:
            pipe.hmget(naming.node_key(nid), ["agent_id", "generation", "status"])
        rows = pipe.execute()
        return {nid: (row[0], row[1], row[2]) for nid, row in zip(ids, rows, strict=True)}

    def create_nodes(self, records: list[NodeRecord], pipe: Any = None) -> None:
        target = pipe if pipe is not None else self.r.pipeline()
        for rec in records:
            target.hset(naming.node_key(rec.node_id), mapping=rec.to_hash())
            target.sadd(naming.nodes_key(), rec.node_id)
        if pipe is None:
            target.execute()

    def update_node(self, node_id: str, **values: Any) -> bool:
        """Set fields of an existing node record; False (and no write) if it is gone."""
        return self._update_hash(naming.node_key(node_id), values)

    def delete_node(self, node_id: str, pipe: Any = None) -> None:
        target = pipe if pipe is not None else self.r.pipeline()
        target.delete(naming.node_key(node_id))
        target.srem(naming.nodes_key(), node_id)
        if pipe is None:
            target.execute()

    def node(self, node_id: str) -> NodeRecord | None:
        key = naming.node_key(node_id)
        return decode_record(NodeRecord, key, self.r.hgetall(key))

    def nodes(self, pool: str | None = None, agent_id: str | None = None) -> list[NodeRecord]:
        ids = sorted(self.r.smembers(naming.nodes_key()))
        out = []
        for rec in self._load_many(ids, naming.node_key, NodeRecord):
            if rec is None:
                continue
            if pool is not None and rec.pool != pool:
                continue
            if agent_id is not None and rec.agent_id != agent_id:
                continue
            out.append(rec)
        return out

    # ---- pools ----------------------------------------------------------------------

    def set_desired(self, pool: str, size: int) -> None:
        self.r.hset(naming.pools_key(), pool, size)

    def desired(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.r.hgetall(naming.pools_key()).items()}

    def set_pool_status(self, pool: str, status: dict[str, Any], pipe: Any = None) -> None:
        (pipe if pipe is not None else self.r).hset(
            naming.pool_status_key(), pool, json.dumps(status)
        )

    def pool_status(self) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self.r.hgetall(naming.pool_status_key()).items()}

    # ---- cluster and leader ---------------------------------------------------------

    def cluster_state(self) -> str | None:
        value = self.r.get(naming.cluster_state_key())
        return str(value) if value is not None else None

    def set_cluster_state(self, value: str) -> None:
        self.r.set(naming.cluster_state_key(), value)

    def leader_info(self) -> dict[str, str]:
        """What the leading master published: master_id, since, http (its pages' URL)."""
        return dict(self.r.hgetall(naming.leader_info_key()))

    def set_leader_info(self, **values: str | float) -> None:
        self.r.hset(
            naming.leader_info_key(), mapping={k: encode_field(v) for k, v in values.items()}
        )

    def pipeline(self) -> Any:
        """A non-transactional pipeline for batching several writes in one round trip."""
        return self.r.pipeline(transaction=False)

    # ---- leases ---------------------------------------------------------------------

    def acquire_lease(self, key: str, token: str, ttl: float) -> bool:
        """Take the lease if free, or renew it if we hold it."""
        ms = int(ttl * 1000)
        if self._renew(keys=[key], args=[token, ms]):
            return True
        return bool(self.r.set(key, token, nx=True, px=ms))

    def release_lease(self, key: str, token: str) -> None:
        self._release(keys=[key], args=[token])

    def lease_holder(self, key: str) -> str | None:
        value = self.r.get(key)
        return str(value) if value is not None else None

    # ---- helpers --------------------------------------------------------------------

    def _update_hash(self, key: str, values: dict[str, Any]) -> bool:
        if not values:
            return bool(self.r.exists(key))
        flat: list[str] = []
        for k, v in values.items():
            flat += [k, encode_field(v)]
        return bool(self._update(keys=[key], args=flat))

    def _load_many(self, ids: list[str], key_fn: Any, cls: type[R]) -> list[R | None]:
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for item in ids:
            pipe.hgetall(key_fn(item))
        return [decode_record(cls, key_fn(i), d) for i, d in zip(ids, pipe.execute(), strict=True)]
