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
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Literal, TypeVar, cast, get_origin

import psutil
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from grid.core import naming
from grid.core.errors import ConflictError
from grid.core.rtypes import Redis
from grid.core.scripts import LuaScript

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
# an agent's index: node id -> (generation, status) as stored
Placements = dict[str, tuple[str, str]]


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


@dataclass(frozen=True)
class HeartbeatReply:
    """What one heartbeat found: `taken` (another process holds the agent id), `missing`
    (Redis lost the agent's record: register again) or `ok` with the agent's own index."""

    outcome: Literal["ok", "taken", "missing"]
    placements: Placements = field(default_factory=dict)


@dataclass
class ChangeBatch:
    """What the change stream named since a cursor: agents and nodes (with their agent)."""

    cursor: str
    agents: set[str] = field(default_factory=set)
    nodes: dict[str, str] = field(default_factory=dict)  # node id -> agent id
    gap: bool = False  # entries the reader never saw were trimmed: read everything again


def _parse_index(flat: list[str]) -> Placements:
    """HGETALL of an agent's node index -> {node id: (generation, status)}."""
    out: Placements = {}
    for node_id, entry in zip(flat[::2], flat[1::2], strict=True):
        parts = split_entry(entry)
        if parts is not None:
            out[str(node_id)] = (parts[0], parts[1])
    return out


def split_entry(entry: object) -> tuple[str, str, str] | None:
    """(generation, status, pool) of an index entry; None (skipped) if it is not one."""
    parts = str(entry).split(":", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def index_entry(rec: NodeRecord) -> str:
    """An agent's index entry for a node: "<generation>:<status>:<pool>" (ids hold no ':')."""
    return f"{rec.generation}:{encode_field(rec.status)}:{rec.pool}"


@dataclass
class NodeCensus:
    """How many nodes there are per (pool, status), and per agent (lost ones not counted)."""

    by_pool_status: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_agent: Counter[str] = field(default_factory=Counter)

    def add(self, agent_id: str, pool: str, status: str, count: int = 1) -> None:
        """Count a node in (or, with a negative `count`, out); a count that reaches zero
        goes, so a census kept up to date equals one taken afresh."""
        _bump(self.by_pool_status, (pool, status), count)
        if status != NodeStatus.LOST.value:
            _bump(self.by_agent, agent_id, count)

    def add_node(self, node: NodeRecord, count: int = 1) -> None:
        self.add(node.agent_id, node.pool, node.status.value, count)

    def copy(self) -> NodeCensus:
        return NodeCensus(Counter(self.by_pool_status), Counter(self.by_agent))

    @classmethod
    def of(cls, nodes: Iterable[NodeRecord]) -> NodeCensus:
        census = cls()
        for node in nodes:
            census.add_node(node)
        return census


def _bump(counter: Counter[Any], key: Any, count: int) -> None:
    total = counter[key] + count
    if total > 0:
        counter[key] = total
    else:
        counter.pop(key, None)


class GridState:
    """Every read and write of Grid's records in Redis (keys from `grid.core.naming`).

    Layout: an agent's record, its id lock, its node index and the records of the nodes placed
    on it share the agent's hash tag, and each change of a node record and its index entry is
    one Lua script, so nothing transactional crosses a Redis Cluster slot. Global keys (the
    agent set, heartbeat times, the node catalogue, the change stream) are written beside it
    in the same pipeline, not the same transaction: a crash between them leaves at worst a
    stale catalogue entry, which readers tolerate and `check_index` reports.
    """

    def __init__(self, client: Redis, changes_maxlen: int = 100_000) -> None:
        self.r = client
        self.changes_maxlen = changes_maxlen
        self._update = LuaScript.named("update_if_exists", client)
        self._renew = LuaScript.named("renew_lease", client)
        self._release = LuaScript.named("release_lease", client)
        self._put_node = LuaScript.named("put_node", client)
        self._update_node = LuaScript.named("update_node", client)
        self._delete_node = LuaScript.named("delete_node", client)
        self._heartbeat = LuaScript.named("heartbeat", client)

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
        pipe = self.pipeline()
        pipe.delete(naming.agent_key(record.agent_id))
        pipe.hset(naming.agent_key(record.agent_id), mapping=record.to_hash())
        pipe.sadd(naming.agents_key(), record.agent_id)
        pipe.zadd(naming.heartbeats_key(), {record.agent_id: record.last_heartbeat})
        self._track_unwell(pipe, record.agent_id, record.status)
        self._changed(pipe, record.agent_id)
        pipe.execute()

    def renew_agent_claim(self, agent_id: str, token: str, ttl: float) -> bool:
        """Extend our hold on the agent id; False if someone else holds it now."""
        key = naming.agent_lock_key(agent_id)
        if self._renew(keys=[key], args=[token, int(ttl * 1000)]):
            return True
        # The lock expired (e.g. Redis restarted and forgot it): take it back if free.
        return bool(self.r.set(key, token, nx=True, px=int(ttl * 1000)))

    def unregister_agent(self, agent_id: str, token: str) -> None:
        pipe = self.pipeline()
        pipe.delete(naming.agent_key(agent_id))
        pipe.srem(naming.agents_key(), agent_id)
        pipe.zrem(naming.heartbeats_key(), agent_id)
        pipe.srem(naming.unwell_agents_key(), agent_id)
        self._changed(pipe, agent_id)
        pipe.execute()
        self._release(keys=[naming.agent_lock_key(agent_id)], args=[token])

    def agent_exists(self, agent_id: str) -> bool:
        return bool(self.r.exists(naming.agent_key(agent_id)))

    def update_agent(self, agent_id: str, **values: Any) -> bool:
        pipe = self.pipeline()
        self._update(keys=[naming.agent_key(agent_id)], args=_flat(values), client=pipe)
        if "status" in values:
            self._track_unwell(pipe, agent_id, values["status"])
        self._changed(pipe, agent_id)
        return bool(pipe.execute()[0])

    def agent(self, agent_id: str) -> AgentRecord | None:
        key = naming.agent_key(agent_id)
        return decode_record(AgentRecord, key, self.r.hgetall(key))

    def agents(self, ids: list[str] | None = None) -> list[AgentRecord]:
        """All registered agents, or those of `ids`, by id."""
        wanted = sorted(self.r.smembers(naming.agents_key()) if ids is None else ids)
        return [r for r in self._load_many([naming.agent_key(a) for a in wanted], AgentRecord) if r]

    def heartbeat(
        self,
        agent_id: str,
        token: str,
        ttl: float,
        now: float,
        publish: Callable[[Any], None] | None = None,
        **fields: Any,
    ) -> HeartbeatReply:
        """Renew the claim, update the record and read this agent's own node index, with the
        heartbeat time (and `publish`'s live event, if given) in the same round trip."""
        pipe = self.pipeline()
        keys = [
            naming.agent_lock_key(agent_id),
            naming.agent_key(agent_id),
            naming.agent_nodes_key(agent_id),
        ]
        args = [token, int(ttl * 1000), *_flat({"last_heartbeat": now, **fields})]
        self._heartbeat(keys=keys, args=args, client=pipe)
        pipe.zadd(naming.heartbeats_key(), {agent_id: now})
        if publish is not None:
            publish(pipe)
        reply = pipe.execute()[0]
        code = int(reply[0])
        if code == -1:
            return HeartbeatReply("taken")
        if code == 0:
            return HeartbeatReply("missing")
        return HeartbeatReply("ok", _parse_index(reply[1:]))

    def heartbeat_times(
        self, before: float | None = None, ids: list[str] | None = None
    ) -> dict[str, float]:
        """Last heartbeat of the agents that beat before `before`, or of `ids`."""
        key = naming.heartbeats_key()
        if ids is not None:
            scores = cast(Any, self.r).zmscore(key, ids) if ids else []
            return {a: float(s) for a, s in zip(ids, scores, strict=True) if s is not None}
        rows = self.r.zrangebyscore(key, "-inf", f"({before}", withscores=True)
        return {str(a): float(s) for a, s in rows}

    def unwell_agents(self) -> set[str]:
        """Agents last marked degraded or offline."""
        return set(self.r.smembers(naming.unwell_agents_key()))

    # ---- nodes ----------------------------------------------------------------------

    def next_generation(self) -> int:
        return int(self.r.incr(naming.generation_key()))

    def reserve_generations(self, count: int) -> int:
        """Reserve `count` generations; returns the one before the first reserved."""
        if count <= 0:
            return 0
        return int(self.r.incrby(naming.generation_key(), count)) - count

    def create_nodes(self, records: list[NodeRecord], pipe: Any = None) -> None:
        target = pipe if pipe is not None else self.pipeline()
        for rec in records:
            self._put_node(
                keys=_node_keys(rec.agent_id, rec.node_id),
                args=[rec.node_id, index_entry(rec), *_flat_hash(rec.to_hash())],
                client=target,
            )
            target.hset(naming.node_agents_key(), rec.node_id, rec.agent_id)
            self._changed(target, rec.agent_id, rec.node_id)
        if pipe is None:
            target.execute()

    def update_node(self, agent_id: str, node_id: str, **values: Any) -> bool:
        """Set fields of an existing node record; False (and no write) if it is gone."""
        pipe = self.pipeline()
        self._update_node(
            keys=_node_keys(agent_id, node_id), args=[node_id, *_flat(values)], client=pipe
        )
        self._changed(pipe, agent_id, node_id)
        return bool(pipe.execute()[0])

    def set_node_status(
        self, agent_id: str, node_ids: list[str], status: NodeStatus, pipe: Any = None
    ) -> None:
        """Set the status of several nodes of one agent (in `pipe`, or at once)."""
        target = pipe if pipe is not None else self.pipeline()
        for node_id in node_ids:
            self._update_node(
                keys=_node_keys(agent_id, node_id),
                args=[node_id, "status", encode_field(status)],
                client=target,
            )
            self._changed(target, agent_id, node_id)
        if pipe is None:
            target.execute()

    def delete_node(self, agent_id: str, node_id: str, pipe: Any = None) -> None:
        target = pipe if pipe is not None else self.pipeline()
        self._delete_node(keys=_node_keys(agent_id, node_id), args=[node_id], client=target)
        target.hdel(naming.node_agents_key(), node_id)
        self._changed(target, agent_id, node_id)
        if pipe is None:
            target.execute()

    def node_agent(self, node_id: str) -> str | None:
        """Which agent a node is placed on, from the catalogue."""
        value = self.r.hget(naming.node_agents_key(), node_id)
        return str(value) if value is not None else None

    def node(self, node_id: str, agent_id: str | None = None) -> NodeRecord | None:
        """A node's record; `agent_id` (when the caller knows it) saves a catalogue read."""
        owner = agent_id if agent_id is not None else self.node_agent(node_id)
        if owner is None:
            return None
        key = naming.node_key(owner, node_id)
        return decode_record(NodeRecord, key, self.r.hgetall(key))

    def agent_placements(self, agent_id: str) -> Placements:
        """The agent's own index: {node id: (generation, status)}."""
        return _parse_index(_flat_hash(self.r.hgetall(naming.agent_nodes_key(agent_id))))

    def nodes(
        self,
        pool: str | None = None,
        agent_id: str | None = None,
        status: NodeStatus | None = None,
        limit: int | None = None,
    ) -> list[NodeRecord]:
        """Node records by id, filtered; with `agent_id` only that agent's (from its index,
        and by status from the index too). With `limit`, records are read in pages and the
        read stops once `limit` match."""
        if agent_id is not None:
            index = self.agent_placements(agent_id)
            wanted = status.value if status is not None else None
            ids = sorted(n for n, (_, s) in index.items() if wanted is None or s == wanted)
            keys = [naming.node_key(agent_id, n) for n in ids]
        else:
            owners = self.r.hgetall(naming.node_agents_key())
            keys = [naming.node_key(owners[n], n) for n in sorted(owners)]
        out: list[NodeRecord] = []
        page = 1_000 if limit else max(1, len(keys))
        for start in range(0, len(keys), page):
            for rec in self._load_many(keys[start : start + page], NodeRecord):
                if rec is None or (pool is not None and rec.pool != pool):
                    continue
                if status is not None and rec.status != status:
                    continue
                out.append(rec)
                if limit and len(out) >= limit:
                    return out
        return out

    def node_total(self) -> int:
        """How many node records the catalogue holds."""
        return int(self.r.hlen(naming.node_agents_key()))

    def check_index(self) -> list[str]:
        """Every disagreement between node records, agent indexes and the catalogue (empty
        when consistent). Reads everything: for tests and `grid doctor`, not for passes."""
        problems: list[str] = []
        records: dict[str, NodeRecord] = {}
        for key in self.r.scan_iter(match=f"{naming.PREFIX}:{{*}}:node:*", count=1000):
            rec = decode_record(NodeRecord, key, self.r.hgetall(key))
            if rec is None:
                problems.append(f"{key}: unreadable record")
            elif key != naming.node_key(rec.agent_id, rec.node_id):
                problems.append(f"{key}: record says agent {rec.agent_id}, node {rec.node_id}")
            else:
                records[rec.node_id] = rec
        indexed: dict[str, tuple[str, str]] = {}
        for key in self.r.scan_iter(match=f"{naming.PREFIX}:{{*}}:nodes", count=1000):
            agent_id = key[len(naming.PREFIX) + 2 : -len("}:nodes")]
            for node_id, entry in self.r.hgetall(key).items():
                indexed[node_id] = (agent_id, entry)
        catalogue = self.r.hgetall(naming.node_agents_key())
        for node_id, rec in records.items():
            want = (rec.agent_id, index_entry(rec))
            if indexed.get(node_id) != want:
                problems.append(f"node {node_id}: index {indexed.get(node_id)} != record {want}")
            if catalogue.get(node_id) != rec.agent_id:
                problems.append(f"node {node_id}: catalogue {catalogue.get(node_id)!r}")
        for node_id in set(indexed) - set(records):
            problems.append(f"node {node_id}: indexed on {indexed[node_id][0]} with no record")
        for node_id in set(catalogue) - set(records):
            problems.append(f"node {node_id}: in the catalogue with no record")
        return problems

    # ---- the change stream ------------------------------------------------------------

    def change_cursor(self) -> str:
        """The id of the newest change: what a full read of everything has covered."""
        newest = self.r.xrevrange(naming.changes_key(), count=1)
        return str(newest[0][0]) if newest else "0-0"

    def changes_since(self, cursor: str, limit: int = 50_000) -> ChangeBatch:
        """Agents and nodes changed after `cursor`. `gap` is set when entries after the
        cursor may have been trimmed (the cursor's own entry is gone) or past `limit`."""
        key = naming.changes_key()
        batch = ChangeBatch(cursor=cursor)
        if cursor != "0-0" and not self.r.xrange(key, min=cursor, max=cursor):
            batch.gap = True
            return batch
        seen = 0
        while True:
            rows = self.r.xrange(key, min=f"({batch.cursor}", count=5_000)
            for entry_id, fields in rows:
                agent_id, node_id = fields.get("a", ""), fields.get("n", "")
                if node_id:
                    batch.nodes[node_id] = agent_id
                elif agent_id:
                    batch.agents.add(agent_id)
                batch.cursor = str(entry_id)
            seen += len(rows)
            if len(rows) < 5_000:
                return batch
            if seen >= limit:
                batch.gap = True
                return batch

    def reread(self, batch: ChangeBatch) -> tuple[dict[str, AgentRecord], dict[str, NodeRecord]]:
        """The current records of what a batch names (absent ones were removed)."""
        agent_ids = sorted(batch.agents)
        node_ids = sorted(batch.nodes)
        agents = self._load_many([naming.agent_key(a) for a in agent_ids], AgentRecord)
        keys = [naming.node_key(batch.nodes[n], n) for n in node_ids]
        nodes = self._load_many(keys, NodeRecord)
        return (
            {a: r for a, r in zip(agent_ids, agents, strict=True) if r is not None},
            {n: r for n, r in zip(node_ids, nodes, strict=True) if r is not None},
        )

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

    def index_owners(self) -> list[str]:
        """Every agent that may hold nodes: registered ones and any the catalogue names (an
        agent that is gone can still own records until the master collects them)."""
        owners = set(self.r.smembers(naming.agents_key()))
        owners.update(self.r.hvals(naming.node_agents_key()))
        return sorted(owners)

    def census(self, agent_ids: list[str]) -> NodeCensus:
        """Nodes by (pool, status) and by agent, from the agents' indexes (one small read
        per agent, no node record): exact, and cheap enough for `grid status` at 50,000."""
        pipe = self.pipeline()
        for agent_id in agent_ids:
            pipe.hvals(naming.agent_nodes_key(agent_id))
        census = NodeCensus()
        for agent_id, entries in zip(agent_ids, pipe.execute(), strict=True):
            for entry in entries:
                parts = split_entry(entry)
                if parts is not None:
                    census.add(agent_id, parts[2], parts[1])
        return census

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

    def _changed(self, pipe: Any, agent_id: str, node_id: str = "") -> None:
        """Note in the change stream that a record of this agent (or node) changed."""
        pipe.xadd(
            naming.changes_key(),
            {"a": agent_id, "n": node_id},
            maxlen=self.changes_maxlen,
            approximate=True,
        )

    @staticmethod
    def _track_unwell(pipe: Any, agent_id: str, status: Any) -> None:
        if encode_field(status) == AgentStatus.ONLINE.value:
            pipe.srem(naming.unwell_agents_key(), agent_id)
        else:
            pipe.sadd(naming.unwell_agents_key(), agent_id)

    def _load_many(self, keys: list[str], cls: type[R]) -> list[R | None]:
        if not keys:
            return []
        pipe = self.pipeline()
        for key in keys:
            pipe.hgetall(key)
        return [decode_record(cls, k, d) for k, d in zip(keys, pipe.execute(), strict=True)]


def _node_keys(agent_id: str, node_id: str) -> list[str]:
    return [naming.node_key(agent_id, node_id), naming.agent_nodes_key(agent_id)]


def _flat(values: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in values.items():
        out += [key, encode_field(value)]
    return out


def _flat_hash(mapping: Mapping[Any, Any]) -> list[str]:
    out: list[str] = []
    for key, value in mapping.items():
        out += [str(key), str(value)]
    return out
