"""The agent runtime: registers, heartbeats, spawns/stops/supervises its nodes.

One `AgentRuntime` lives in each agent process; the Celery tasks on the agent's own queue
call into it. Supervision is event-driven: the platform's exit watch calls `_on_exit`, which
restarts the node with exponential backoff or, past the crash limit, marks it failed so the
master places a replacement elsewhere.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import shlex
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import psutil
import redis

from grid import __version__
from grid.autoscaler.metrics import MetricsStore
from grid.core import naming
from grid.core.connection import Clients
from grid.core.errors import PlatformError, UnsafeInputError
from grid.core.events import EventLog, EventType
from grid.core.naming import check_id, check_ids
from grid.core.paths import under
from grid.core.rtypes import is_cluster
from grid.core.settings import Settings
from grid.core.state import (
    AgentRecord,
    GridState,
    NodeRecord,
    NodeStatus,
    Placements,
    owner_token,
)
from grid.platforms import create_platform
from grid.platforms.base import NodeSpec, Platform, WorkloadState, WorkloadStatus
from grid.workers.agent.health import wait_healthy
from grid.workers.agent.sampler import NodeSampler

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
#: most log lines a `logs` task may ask for
MAX_LOG_LINES = 10_000


def refusing(
    action: str, answer: Callable[[str], R]
) -> Callable[
    [Callable[Concatenate[AgentRuntime, P], R]], Callable[Concatenate[AgentRuntime, P], R]
]:
    """Turn an UnsafeInputError inside an agent entry point into a reported refusal.

    The entry answers `answer(reason)` and the agent records a `security_violation` event:
    a forged or corrupt message never crashes a task, is never retried, and is visible.
    """

    def wrap(
        method: Callable[Concatenate[AgentRuntime, P], R],
    ) -> Callable[Concatenate[AgentRuntime, P], R]:
        @functools.wraps(method)
        def guarded(self: AgentRuntime, /, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return method(self, *args, **kwargs)
            except UnsafeInputError as exc:
                self.report_violation(action, str(exc))
                return answer(str(exc))

        return guarded

    return wrap


def refusal(reason: str) -> dict[str, Any]:
    return {"result": "refused", "reason": reason}


_runtime: AgentRuntime | None = None


def current_agent() -> AgentRuntime:
    if _runtime is None:
        raise RuntimeError("no agent runtime in this process")
    return _runtime


def set_current_agent(runtime: AgentRuntime | None) -> None:
    global _runtime
    _runtime = runtime


@dataclass
class LocalNode:
    """What the agent knows of one node it runs."""

    record: NodeRecord
    spec: NodeSpec
    phase: NodeStatus = NodeStatus.STARTING  # STARTING, RUNNING, RESTARTING or STOPPING
    endpoint: str = ""
    crashes: collections.deque[float] = field(default_factory=collections.deque)
    restart_timer: threading.Timer | None = None


@dataclass
class AgentOptions:
    agent_id: str
    platform: str = "process"
    max_nodes: int = 10
    labels: dict[str, str] = field(default_factory=dict)
    cost: float = 0.0
    platform_config: dict[str, Any] = field(default_factory=dict)


class AgentRuntime:
    def __init__(self, settings: Settings, clients: Clients, options: AgentOptions) -> None:
        self.settings = settings
        self.options = options
        self.agent_id = options.agent_id
        self.state = GridState(clients.state)
        self.events = EventLog.from_settings(clients.events, settings)
        config = dict(options.platform_config)
        if options.platform == "process":
            config.setdefault("root", str(process_nodes_root(settings.home, self.agent_id)))
            config.setdefault("start_timeout", settings.node_start_timeout)
        self.platform: Platform = create_platform(options.platform, self.agent_id, config)
        self.node_command = resolve_node_command(settings.node_command)
        self.token = owner_token()
        self.nodes: dict[str, LocalNode] = {}
        self._nodes_lock = threading.Lock()
        self._node_locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self._stopping = threading.Event()
        self._waiting: dict[str, float] = {}  # node id -> when first seen waiting for a task
        self._refused_ids: set[str] = set()  # unsafe ids in the index, reported once each
        self._heartbeat_thread: threading.Thread | None = None
        self.registration_ms = 0.0
        self.sampler = NodeSampler(
            MetricsStore(
                clients.events,
                retention=settings.metrics_retention,
                history_retention=settings.metrics_history_retention,
            ),
            self.sampled_nodes,
            source=self.agent_id,
            interval=settings.metrics_interval,
        )

    # ---- lifecycle --------------------------------------------------------------------

    def start(self, background: bool = True) -> None:
        """Claim the id (ConflictError if a live agent holds it), register, adopt, watch.

        `background=False` starts no heartbeat or sampler thread: the caller calls
        `heartbeat()` (the simulator drives thousands of agents from one scheduler).
        """
        self.state.claim_agent_id(self.agent_id, self.token, ttl=self.settings.offline_after)
        started = time.perf_counter()
        self.register()
        self.registration_ms = (time.perf_counter() - started) * 1000
        self.adopt()
        self.platform.watch(self.watched_ids, self._on_exit)
        if not background:
            return
        self._heartbeat_thread = threading.Thread(
            target=self._heartbeat_loop, name="agent-heartbeat", daemon=True
        )
        self._heartbeat_thread.start()
        self.sampler.start()

    def sampled_nodes(self) -> list[tuple[str, str, str]]:
        with self._nodes_lock:
            return [
                (nid, n.record.pool, n.endpoint)
                for nid, n in self.nodes.items()
                if n.phase == NodeStatus.RUNNING and n.endpoint
            ]

    def record(self) -> AgentRecord:
        return AgentRecord(
            agent_id=self.agent_id,
            hostname=socket.gethostname(),
            platform=self.options.platform,
            max_nodes=self.options.max_nodes,
            labels=self.options.labels,
            cost=self.options.cost,
            version=__version__,
            registered_at=time.time(),
            last_heartbeat=time.time(),
            node_count=len(self.nodes),
            pid=psutil.Process().pid,
        )

    def register(self) -> None:
        existing = self.state.agent(self.agent_id)
        rec = self.record()
        if existing is not None:
            rec.draining = existing.draining  # an operator's drain survives a restart
            # Keep a degraded/offline status: the master's health check then sees the fresh
            # heartbeat and records agent_recovered with the real downtime.
            rec.status = existing.status
            rec.down_since = existing.down_since
        self.state.register_agent(rec)
        self.events.emit(
            EventType.AGENT_REGISTERED,
            f"agent {self.agent_id} registered ({self.options.platform}, "
            f"max {self.options.max_nodes} nodes)",
            agent_id=self.agent_id,
            platform=self.options.platform,
            max_nodes=self.options.max_nodes,
        )
        log.info("registered", extra={"agent_id": self.agent_id})

    def shutdown(self, stop_nodes: bool = True) -> None:
        """Stop the nodes first (in parallel), then heartbeating; unregister.

        Redis is best effort here: it may be down or restarting, and a node must never be
        left running because a record could not be read or deleted.
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        if stop_nodes:
            self._stop_local_nodes()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(timeout=5)
        self.sampler.stop()
        self.platform.close()
        with contextlib.suppress(redis.RedisError):
            self.state.unregister_agent(self.agent_id, self.token)
            self.events.emit(
                EventType.AGENT_UNREGISTERED,
                f"agent {self.agent_id} stopped",
                agent_id=self.agent_id,
            )
        log.info("unregistered", extra={"agent_id": self.agent_id})

    def _stop_local_nodes(self) -> None:
        """Stop every node this agent knows of or its platform still lists as its own."""
        with self._nodes_lock:
            ids = set(self.nodes)
        with contextlib.suppress(PlatformError):
            ids |= {h.node_id for h in self.platform.list({naming.LABEL_AGENT_ID: self.agent_id})}
        if ids:
            with ThreadPoolExecutor(max_workers=min(16, len(ids))) as pool:
                list(pool.map(self._stop_at_shutdown, sorted(ids)))

    def _stop_at_shutdown(self, node_id: str) -> None:
        try:
            self.stop(node_id)  # stops the workload before it touches Redis
        except redis.RedisError as exc:
            log.warning(
                "node stopped, its record not updated: %s",
                exc,
                extra={"agent_id": self.agent_id, "node_id": node_id},
            )
        except PlatformError as exc:
            log.error(
                "node did not stop: %s", exc, extra={"agent_id": self.agent_id, "node_id": node_id}
            )

    def report_violation(self, action: str, reason: str) -> None:
        """Record a refused unsafe input (event `security_violation`) and log it."""
        log.warning("refused %s: %s", action, reason, extra={"agent_id": self.agent_id})
        with contextlib.suppress(redis.RedisError):
            self.events.emit(
                EventType.SECURITY_VIOLATION,
                f"agent {self.agent_id} refused {action}: {reason}",
                agent_id=self.agent_id,
                action=action,
                reason=reason,
            )

    def _node_event(
        self, kind: EventType, message: str, node_id: str, pool: str, **data: Any
    ) -> None:
        """Record an event about one of the nodes this agent runs (or ran)."""
        self.events.emit(kind, message, agent_id=self.agent_id, node_id=node_id, pool=pool, **data)

    def watched_ids(self) -> list[str]:
        with self._nodes_lock:
            return [nid for nid, n in self.nodes.items() if n.phase == NodeStatus.RUNNING]

    # ---- specs ------------------------------------------------------------------------

    def spec_for(self, rec: NodeRecord) -> NodeSpec:
        labels = naming.node_labels(rec.node_id, self.agent_id, rec.pool)
        labels[naming.LABEL_GENERATION] = str(rec.generation)
        return NodeSpec(
            node_id=rec.node_id,
            agent_id=self.agent_id,
            pool=rec.pool,
            command=self.node_command,
            port=rec.port or 0,
            memory_mb=rec.memory_mb,
            labels=labels,
        )

    # ---- spawn / stop (called by tasks) -------------------------------------------------

    @refusing("spawn", refusal)
    def spawn(self, node_id: str) -> dict[str, Any]:
        """Start a node placed on this agent. Idempotent: a second delivery is a no-op."""
        node_id = check_id(node_id)
        with self._node_locks[node_id]:
            if self._stopping.is_set():
                return {"result": "ignored", "reason": "the agent is stopping"}
            rec = self.state.node(node_id, self.agent_id)
            if rec is None or rec.agent_id != self.agent_id:
                return {"result": "ignored", "reason": "not placed on this agent"}
            if rec.node_id != node_id:
                raise UnsafeInputError(f"the record of node {node_id} names {rec.node_id!r}")
            check_id(rec.pool, "pool")
            if rec.status in (NodeStatus.STOPPING, NodeStatus.LOST):
                return {"result": "ignored", "reason": f"node is {rec.status}"}
            local = self.nodes.get(node_id)
            if local is not None and local.phase in (NodeStatus.RUNNING, NodeStatus.RESTARTING):
                return {"result": "already running", "endpoint": local.endpoint}
            return self._start(rec, restart=False)

    def _start(self, rec: NodeRecord, restart: bool) -> dict[str, Any]:
        """Start `rec` through the platform and wait for health. Caller holds the node lock."""
        started = time.perf_counter()
        node_id = rec.node_id
        spec = self.spec_for(rec)
        local = LocalNode(record=rec, spec=spec)
        with self._nodes_lock:
            prev = self.nodes.get(node_id)
            if prev is not None:
                local.crashes = prev.crashes
            self.nodes[node_id] = local
        if not self.state.update_node(
            self.agent_id, node_id, status=NodeStatus.STARTING, error="", started_at=time.time()
        ):
            self._forget(node_id)
            return {"result": "ignored", "reason": "record removed"}
        try:
            handle = self.platform.spawn(spec)
        except PlatformError as exc:
            return self._spawn_failed(rec, str(exc))
        healthy = wait_healthy(
            handle.endpoint,
            self.settings.node_start_timeout,
            alive=lambda: self.platform.status(node_id).state == WorkloadState.RUNNING,
        )
        if healthy is None:
            logs = self.platform.logs(node_id, 3).replace("\n", " | ")
            with contextlib.suppress(PlatformError):
                self.platform.stop(node_id, grace=0)
            return self._spawn_failed(
                rec, f"not healthy within {self.settings.node_start_timeout}s; {logs}"
            )
        local.endpoint = handle.endpoint
        local.phase = NodeStatus.RUNNING
        fields: dict[str, Any] = {
            "status": NodeStatus.RUNNING,
            "pid": handle.pid,
            "port": handle.port,
            "endpoint": handle.endpoint,
            "started_at": handle.started_at,
            "platform": self.platform.name,
        }
        if restart:
            rec.restart_count += 1
            fields["restart_count"] = rec.restart_count
        if not self.state.update_node(self.agent_id, node_id, **fields):
            # Removed while starting (scaled down or fenced): do not leave it running.
            self.stop(node_id)
            return {"result": "ignored", "reason": "record removed while starting"}
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        kind = EventType.NODE_RESTARTED if restart else EventType.SPAWN_SUCCEEDED
        self._node_event(
            kind,
            f"node {node_id} {'restarted' if restart else 'running'} at {handle.endpoint}",
            node_id,
            rec.pool,
            endpoint=handle.endpoint,
            duration_ms=elapsed_ms,
            restart_count=rec.restart_count,
        )
        return {"result": "running", "endpoint": handle.endpoint, "duration_ms": elapsed_ms}

    def _spawn_failed(self, rec: NodeRecord, error: str) -> dict[str, Any]:
        self._forget(rec.node_id)
        self.state.update_node(
            self.agent_id, rec.node_id, status=NodeStatus.FAILED, error=error[:500]
        )
        self._node_event(
            EventType.SPAWN_FAILED,
            f"node {rec.node_id} failed to start: {error}",
            rec.node_id,
            rec.pool,
            error=error[:500],
        )
        log.warning(
            "spawn failed: %s", error, extra={"agent_id": self.agent_id, "node_id": rec.node_id}
        )
        return {"result": "failed", "error": error}

    @refusing("spawn_many", refusal)
    def spawn_many(self, node_ids: list[str]) -> dict[str, Any]:
        """Start a batch of nodes side by side; each is idempotent like `spawn`.

        A batch with any invalid id is refused whole: the master never sends one.
        """
        return self._each(self.spawn, check_ids(node_ids))

    @refusing("stop_many", refusal)
    def stop_many(self, node_ids: list[str]) -> dict[str, Any]:
        return self._each(self.stop, check_ids(node_ids))

    @staticmethod
    def _each(action: Callable[[str], dict[str, Any]], node_ids: list[str]) -> dict[str, Any]:
        if len(node_ids) == 1:
            return {node_ids[0]: action(node_ids[0])}
        with ThreadPoolExecutor(max_workers=min(16, len(node_ids))) as pool:
            return dict(zip(node_ids, pool.map(action, node_ids), strict=True))

    @refusing("stop", refusal)
    def stop(self, node_id: str) -> dict[str, Any]:
        """Stop a node, then remove its record. Idempotent: unknown nodes succeed.

        The workload goes first, so that a Redis outage cannot keep it running.
        """
        node_id = check_id(node_id)
        with self._node_locks[node_id]:
            with self._nodes_lock:
                local = self.nodes.get(node_id)
                if local is not None:
                    local.phase = NodeStatus.STOPPING
                    if local.restart_timer is not None:
                        local.restart_timer.cancel()
            try:
                self.platform.stop(node_id, grace=self.settings.stop_grace)
            except PlatformError as exc:
                pool = local.record.pool if local else ""
                self._node_event(
                    EventType.STOP_FAILED, f"node {node_id} did not stop: {exc}", node_id, pool
                )
                raise
            self._forget(node_id)
            rec = self.state.node(node_id, self.agent_id)
            pool = rec.pool if rec else (local.record.pool if local else "")
            if rec is not None and rec.agent_id == self.agent_id:
                self.state.delete_node(self.agent_id, node_id)
            if local is not None or rec is not None:
                self._node_event(EventType.STOP_SUCCEEDED, f"node {node_id} stopped", node_id, pool)
            return {"result": "stopped"}

    def _forget(self, node_id: str) -> None:
        with self._nodes_lock:
            self.nodes.pop(node_id, None)

    @refusing("logs", lambda reason: f"refused: {reason}")
    def logs(self, node_id: str, lines: int) -> str:
        if not isinstance(lines, int) or isinstance(lines, bool):
            raise UnsafeInputError(f"lines must be an integer, got {type(lines).__name__}")
        return self.platform.logs(check_id(node_id), max(0, min(lines, MAX_LOG_LINES)))

    # ---- supervision --------------------------------------------------------------------

    def _on_exit(self, node_id: str, status: WorkloadStatus) -> None:
        with self._nodes_lock:
            local = self.nodes.get(node_id)
            if local is None or local.phase != NodeStatus.RUNNING or self._stopping.is_set():
                return
            local.phase = NodeStatus.RESTARTING
            now = time.monotonic()
            local.crashes.append(now)
            while local.crashes and now - local.crashes[0] > self.settings.crash_window:
                local.crashes.popleft()
            crashes = len(local.crashes)
        rec = local.record
        self._node_event(
            EventType.NODE_CRASHED,
            f"node {node_id} {status.detail or 'exited'}",
            node_id,
            rec.pool,
            exit_code=status.exit_code,
            detail=status.detail,
            crashes_in_window=crashes,
        )
        if crashes > self.settings.crash_limit:
            self._give_up(local, crashes)
            return
        delay = min(
            self.settings.restart_backoff_base * 2 ** (crashes - 1),
            self.settings.restart_backoff_max,
        )
        self.state.update_node(
            self.agent_id, node_id, status=NodeStatus.RESTARTING, error=status.detail
        )
        timer = threading.Timer(delay, self._restart, args=(node_id,))
        timer.daemon = True
        local.restart_timer = timer
        timer.start()

    def _give_up(self, local: LocalNode, crashes: int) -> None:
        node_id = local.record.node_id
        self._forget(node_id)
        with contextlib.suppress(PlatformError):
            self.platform.stop(node_id, grace=0)
        self.state.update_node(
            self.agent_id,
            node_id,
            status=NodeStatus.FAILED,
            error=f"crashed {crashes} times in {self.settings.crash_window:.0f}s",
        )
        self._node_event(
            EventType.NODE_FAILED,
            f"node {node_id} crashed {crashes} times in "
            f"{self.settings.crash_window:.0f}s: giving up",
            node_id,
            local.record.pool,
            crashes=crashes,
        )

    def _restart(self, node_id: str) -> None:
        with self._node_locks[node_id]:
            local = self.nodes.get(node_id)
            if local is None or local.phase != NodeStatus.RESTARTING or self._stopping.is_set():
                return
            rec = self.state.node(node_id, self.agent_id)
            if rec is None or rec.agent_id != self.agent_id:
                self._forget(node_id)
                return
            try:
                self._start(rec, restart=True)
            except Exception:  # a failed restart must not kill the timer thread
                log.exception("restart failed", extra={"node_id": node_id})

    # ---- adoption and fencing -------------------------------------------------------------

    def adopt(self) -> None:
        """Take over nodes still running from a previous run of this agent; fence stale ones.

        A workload is kept only when its record still places it on this agent with the same
        generation; records of this agent with no workload are started again.
        """
        records = {r.node_id: r for r in self.state.nodes(agent_id=self.agent_id)}
        try:
            handles = self.platform.list({naming.LABEL_AGENT_ID: self.agent_id})
        except PlatformError as exc:
            log.warning("cannot list workloads for adoption: %s", exc)
            handles = []
        running = set()
        for handle in handles:
            if not self._valid_id(handle.node_id, "adopt"):
                continue  # a workload labelled with an unsafe id: never touched
            rec = records.get(handle.node_id)
            if not self._owns(rec, handle.labels.get(naming.LABEL_GENERATION)):
                self._fence(handle.node_id, rec)
                continue
            assert rec is not None
            running.add(handle.node_id)
            with self._nodes_lock:
                self.nodes[handle.node_id] = LocalNode(
                    record=rec,
                    spec=self.spec_for(rec),
                    phase=NodeStatus.RUNNING,
                    endpoint=handle.endpoint,
                )
            self.platform.adopt(handle.node_id)
            self._node_event(
                EventType.NODE_ADOPTED,
                f"node {handle.node_id} adopted at {handle.endpoint}",
                handle.node_id,
                rec.pool,
            )
        for node_id, rec in records.items():
            if node_id in running or not self._valid_id(node_id, "adopt"):
                continue
            if rec.status == NodeStatus.STOPPING:
                self.state.delete_node(self.agent_id, node_id)
            elif rec.active:
                threading.Thread(target=self.spawn, args=(node_id,), daemon=True).start()

    def _valid_id(self, node_id: object, action: str) -> bool:
        """True for a valid node id; otherwise the refusal is reported and False returned."""
        try:
            check_id(node_id)
        except UnsafeInputError as exc:
            self.report_violation(action, str(exc))
            return False
        return True

    def _pick_up_lost_tasks(self, placements: Placements) -> None:
        """Spawn or stop this agent's records whose task never came (checked every beat).

        Celery on Redis can drop or strand a task message when the broker connection breaks
        (a Redis restart, a partition). A record seen `pending` or `stopping`, with no task
        working on it, on beats at least two heartbeats (and 2 s) apart is acted on here;
        both actions are idempotent by node id, so a task that does arrive later is a no-op.
        """
        now = time.monotonic()
        waiting: dict[str, float] = {}
        for nid, (_, status) in placements.items():
            if status not in (NodeStatus.PENDING, NodeStatus.STOPPING):
                continue
            if not naming.valid_id(nid):
                if nid not in self._refused_ids:  # reported once, never acted on
                    self._refused_ids.add(nid)
                    self._valid_id(nid, "pick_up")
                continue
            lock = self._node_locks[nid]
            if not lock.acquire(blocking=False):
                continue  # a task is working on it
            lock.release()
            with self._nodes_lock:
                if status == NodeStatus.PENDING and nid in self.nodes:
                    continue
            since = self._waiting.get(nid, now)
            if now - since < max(2.0, 2 * self.settings.heartbeat_interval):
                waiting[nid] = since
                continue
            log.warning(
                "no task came for %s node: acting on the record",
                status,
                extra={"agent_id": self.agent_id, "node_id": nid},
            )
            action = self.spawn if status == NodeStatus.PENDING else self.stop
            threading.Thread(target=action, args=(nid,), daemon=True).start()
        self._waiting = waiting

    def _owns(self, rec: NodeRecord | None, generation: Any) -> bool:
        if rec is None or rec.agent_id != self.agent_id:
            return False
        if rec.status in (NodeStatus.LOST, NodeStatus.FAILED):
            return False
        return generation is None or str(generation) == str(rec.generation)

    def _fence(self, node_id: str, rec: NodeRecord | None) -> None:
        with contextlib.suppress(PlatformError):
            self.platform.stop(node_id, grace=self.settings.stop_grace)
        self._forget(node_id)
        self._node_event(
            EventType.NODE_FENCED,
            f"stale node {node_id} stopped: it was replaced while this agent was away",
            node_id,
            rec.pool if rec else "",
        )

    def _fence_stale(self, placements: Placements) -> None:
        """Stop local nodes whose record no longer places them here (checked every beat):
        `placements` is this agent's own index, so a node missing from it was removed or
        replaced, and its record is read to be sure before fencing."""
        with self._nodes_lock:
            local = {
                nid: n
                for nid, n in self.nodes.items()
                if n.phase in (NodeStatus.RUNNING, NodeStatus.RESTARTING)
            }
        for nid, node in local.items():
            generation, status = placements.get(nid, (None, None))
            if status not in (None, NodeStatus.LOST, NodeStatus.FAILED) and generation == str(
                node.record.generation
            ):
                continue
            with self._node_locks[nid]:
                rec = self.state.node(nid, self.agent_id)
                if not self._owns(rec, node.record.generation):
                    self._fence(nid, rec)

    # ---- heartbeat ------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """One round trip to Redis, reading only this agent's own node index: the cost of a
        beat does not grow with the size of the grid."""
        with self._nodes_lock:
            count = len(self.nodes)

        def publish(pipe: Any = None) -> None:
            self.events.emit(
                EventType.AGENT_HEARTBEAT, agent_id=self.agent_id, node_count=count, pipe=pipe
            )

        # the live heartbeat event rides in the same round trip when events share the state's
        # Redis; with an events Redis of their own (or on Cluster, whose pipelines refuse
        # PUBLISH) it is published on its own, after the beat
        shared = self.events.client is self.state.r and not is_cluster(self.state.r)
        reply = self.state.heartbeat(
            self.agent_id,
            self.token,
            self.settings.offline_after,
            time.time(),
            publish if shared else None,
            node_count=count,
            cpu_percent=psutil.cpu_percent(None),
            memory_percent=psutil.virtual_memory().percent,
        )
        if not shared:
            publish()
        if reply.outcome == "taken":
            log.error("agent id taken over by another process", extra={"agent_id": self.agent_id})
            return
        if reply.outcome == "missing":
            self.register()  # Redis lost our record (restart without persistence)
            return
        self._fence_stale(reply.placements)
        self._pick_up_lost_tasks(reply.placements)

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(self.settings.heartbeat_interval):
            try:
                self.heartbeat()
            except redis.RedisError as exc:
                log.warning("heartbeat failed: %s", exc, extra={"agent_id": self.agent_id})
            except Exception:  # the heartbeat thread must survive anything
                log.exception("heartbeat error", extra={"agent_id": self.agent_id})


def process_nodes_root(home: Path, agent_id: str) -> Path:
    """Where an agent's process platform keeps its nodes, unless its config says otherwise."""
    return under(home / "agents", agent_id) / "nodes"


def resolve_node_command(command: str) -> list[str]:
    """The node argv prefix; the bundled `grid-node` is found beside this Python if not on PATH."""
    argv = shlex.split(command)
    if argv and argv[0] == "grid-node" and shutil.which("grid-node") is None:
        beside = Path(sys.executable).parent / "grid-node"
        argv[0:1] = [str(beside)] if beside.exists() else [sys.executable, "-m", "grid.node.server"]
    return argv
