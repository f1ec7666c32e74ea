"""Grid's state in Redis: agents, nodes, desired pool sizes, leases.

Records are Redis hashes (partial updates are atomic); every key comes from `grid.core.naming`.
Node updates only touch records that still exist, so an agent finishing late can never
resurrect a node the master has already removed.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field, fields
from enum import Enum, StrEnum
from typing import Any, TypeVar

from grid.core import naming
from grid.core.errors import ConflictError
from grid.core.rtypes import Redis


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


R = TypeVar("R", bound="Record")


@dataclass
class Record:
    """A dataclass stored as a Redis hash: scalars as text, dicts as JSON."""

    def to_hash(self) -> dict[str | bytes, bytes | float | int | str]:
        out: dict[str | bytes, bytes | float | int | str] = {}
        for key, value in asdict(self).items():
            if isinstance(value, dict):
                out[key] = json.dumps(value)
            elif isinstance(value, bool):
                out[key] = "1" if value else "0"
            elif isinstance(value, Enum):
                out[key] = str(value.value)
            else:
                out[key] = "" if value is None else str(value)
        return out

    @classmethod
    def from_hash(cls: type[R], data: dict[str, str]) -> R:
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            raw = data[f.name]
            kind = str(f.type)
            if "dict" in kind:
                kwargs[f.name] = json.loads(raw or "{}")
            elif kind.startswith("bool"):
                kwargs[f.name] = raw == "1"
            elif kind.startswith("int"):
                kwargs[f.name] = int(raw) if raw not in ("", "None") else None
            elif kind.startswith("float"):
                kwargs[f.name] = float(raw) if raw not in ("", "None") else None
            else:
                kwargs[f.name] = raw
        return cls(**kwargs)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AgentRecord(Record):
    agent_id: str
    hostname: str = ""
    platform: str = "process"
    max_nodes: int = 10
    labels: dict[str, str] = field(default_factory=dict)
    cost: float = 0.0
    version: str = ""
    status: str = AgentStatus.ONLINE.value
    draining: bool = False
    registered_at: float = 0.0
    last_heartbeat: float = 0.0
    node_count: int = 0
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    pid: int = 0


@dataclass
class NodeRecord(Record):
    node_id: str
    pool: str = naming.DEFAULT_POOL
    agent_id: str = ""
    status: str = NodeStatus.PENDING.value
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
        return self.status in {s.value for s in ACTIVE_NODE_STATES}


# KEYS[1] = hash; ARGV = field, value, ... ; sets fields only if the hash exists.
_UPDATE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
# KEYS[1] = lease key; ARGV[1] = token, ARGV[2] = ttl ms. Renew only our own lease.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def owner_token() -> str:
    """Identifies this process: hostname, pid and start time (so a reused pid never matches)."""
    import psutil  # noqa: PLC0415

    start = psutil.Process(os.getpid()).create_time()
    return f"{socket.gethostname()}:{os.getpid()}:{start:.3f}"


def token_is_stale(token: str) -> bool:
    """True when `token` names a process on this host that no longer runs."""
    import psutil  # noqa: PLC0415

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


class GridState:
    def __init__(self, client: Redis) -> None:
        self.r = client
        self._update = client.register_script(_UPDATE_IF_EXISTS)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

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
        data = self.r.hgetall(naming.agent_key(agent_id))
        return AgentRecord.from_hash(data) if data else None

    def agents(self) -> list[AgentRecord]:
        ids = sorted(self.r.smembers(naming.agents_key()))
        return [r for r in self._load_many(ids, naming.agent_key, AgentRecord) if r]

    # ---- nodes ----------------------------------------------------------------------

    def next_generation(self) -> int:
        return int(self.r.incr(naming.generation_key()))

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
        data = self.r.hgetall(naming.node_key(node_id))
        return NodeRecord.from_hash(data) if data else None

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

    def set_pool_status(self, pool: str, status: dict[str, Any]) -> None:
        self.r.hset(naming.pool_status_key(), pool, json.dumps(status))

    def pool_status(self) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self.r.hgetall(naming.pool_status_key()).items()}

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
            if isinstance(v, dict):
                v = json.dumps(v)
            elif isinstance(v, bool):
                v = "1" if v else "0"
            elif isinstance(v, Enum):
                v = v.value
            flat += [k, "" if v is None else str(v)]
        return bool(self._update(keys=[key], args=flat))

    def _load_many(self, ids: list[str], key_fn: Any, cls: type[R]) -> list[R | None]:
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for item in ids:
            pipe.hgetall(key_fn(item))
        return [cls.from_hash(d) if d else None for d in pipe.execute()]
