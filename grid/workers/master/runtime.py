"""The master runtime: leader election by a Redis lease, beat ticks while leading.

Every master runs a Celery worker. Only the leader consumes `grid.master` (it subscribes on
election and unsubscribes on demotion) and only the leader runs Celery beat, so
reconciliation, health checks and autoscaling run in exactly one place at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import redis
from celery import bootsteps
from celery.beat import Scheduler, Service

from grid.core import naming
from grid.core.celery_app import app
from grid.core.connection import Clients
from grid.core.events import EventLog, EventType
from grid.core.settings import Settings
from grid.core.state import (
    AgentRecord,
    AgentStatus,
    GridState,
    NodeRecord,
    owner_token,
)
from grid.core.tasknames import TaskName
from grid.workers.master.autoscaling import placement_rules, run_autoscaler
from grid.workers.master.backups import ScheduledBackups, tick_interval
from grid.workers.master.monitor import check_agents, update_cluster_state
from grid.workers.master.reconciler import apply_plan, next_deadline, plan
from grid.workers.master.view import FleetView

log = logging.getLogger(__name__)

_runtime: MasterRuntime | None = None


def current_master() -> MasterRuntime:
    if _runtime is None:
        raise RuntimeError("no master runtime in this process")
    return _runtime


def set_current_master(runtime: MasterRuntime | None) -> None:
    global _runtime
    _runtime = runtime


class CeleryDispatcher:
    """Sends one batch task per agent and action to the agent's own queue, with no result
    subscription (results are never read). A pass's messages go out in one kombu publish
    batch (`Producer.batch`: the queue pushes pipelined), not a round trip per agent."""

    def dispatch(
        self, spawns: Mapping[str, Sequence[str]], stops: Mapping[str, Sequence[str]]
    ) -> None:
        sends = [(TaskName.SPAWN_NODES, a, ids) for a, ids in spawns.items() if ids]
        sends += [(TaskName.STOP_NODES, a, ids) for a, ids in stops.items() if ids]
        if not sends:
            return
        with app.producer_or_acquire() as producer, producer.batch():
            for task, agent_id, node_ids in sends:
                self._send(task, agent_id, node_ids, producer)

    @staticmethod
    def reconcile(reason: str) -> None:
        """Ask the leader (this master's other worker threads) for a reconcile pass."""
        app.send_task(
            TaskName.RECONCILE, args=[reason], queue=naming.MASTER_QUEUE, ignore_result=True
        )

    @staticmethod
    def _send(task: str, agent_id: str, node_ids: Sequence[str], producer: Any) -> None:
        args = [list(node_ids)]
        app.send_task(
            task,
            args=args,
            queue=naming.agent_queue(agent_id),
            producer=producer,
            ignore_result=True,
            argsrepr=repr(args),  # Celery's own saferepr is a third of the send's cost
        )


def master_id_default(pid: int | None = None) -> str:
    """The id of a master started without --id, in process `pid` (default: this one)."""
    return f"{socket.gethostname()}-{pid or os.getpid()}"


class MasterRuntime:
    def __init__(self, settings: Settings, clients: Clients, master_id: str | None = None) -> None:
        self.settings = settings
        self.master_id = master_id or master_id_default()
        self.state = GridState(clients.state)
        self.events = EventLog.from_settings(clients.events, settings)
        self.dispatcher = CeleryDispatcher()
        self.token = f"{self.master_id}|{owner_token()}"
        self.is_leader = False
        self.consumer: Any = None
        self._stop = threading.Event()
        self._beat: Service | None = None
        self._beat_thread: threading.Thread | None = None
        self._election_thread: threading.Thread | None = None
        self.web_url = ""
        self._reconcile_lock = threading.Lock()
        self._reconcile_wanted = threading.Event()
        self._health_lock = threading.Lock()
        self._autoscale_lock = threading.Lock()
        self._view_lock = threading.Lock()  # reconcile and health passes share the view
        self.view = FleetView(self.state, settings.view_resync_interval)
        self._last_plan: tuple[Any, ...] | None = None  # inputs of the last empty plan
        self._plan_deadline = 0.0  # when time alone may change that plan (timeouts, backoff)
        self.backups = ScheduledBackups(settings, self.events)

    # ---- election -------------------------------------------------------------------

    def start(self, consumer: Any) -> None:
        self.consumer = consumer
        # a fresh Celery worker (restarted after a broker failure) consumes only the
        # private queue: a leader must subscribe to grid.master again
        consumer.call_soon(self._sync_subscription)
        if self._election_thread is None:
            self._election_thread = threading.Thread(
                target=self._election_loop, name="master-election", daemon=True
            )
            self._election_thread.start()

    def _election_loop(self) -> None:
        ttl = self.settings.lease_ttl
        while not self._stop.is_set():
            try:
                held = self.state.acquire_lease(naming.leader_key(), self.token, ttl)
            except redis.RedisError as exc:
                log.warning("lease check failed: %s", exc)
                held = False
            try:
                if held and not self.is_leader:
                    self._elected()
                elif not held and self.is_leader:
                    self._demoted()
            except Exception:  # the election thread must survive a Redis blip
                log.exception(
                    "leadership change failed; retrying", extra={"master_id": self.master_id}
                )
            # the leader renews at a third of the lease; a standby polls often to take over fast
            self._stop.wait(ttl / 3 if self.is_leader else min(ttl / 3, 0.25))

    def _elected(self) -> None:
        # Redis writes first: if they fail we are not leading yet and the next round retries
        previous = self.state.leader_info()
        self.state.set_leader_info(
            master_id=self.master_id,
            since=time.time(),
            http=self.web_url,
            token=self.token,  # tells this leader's info from a previous leader's
        )
        self.events.emit(
            EventType.LEADER_ELECTED,
            f"master {self.master_id} is the leader",
            master_id=self.master_id,
            previous=previous.get("master_id", ""),
        )
        self.is_leader = True
        log.info("elected leader", extra={"master_id": self.master_id})
        self.consumer.call_soon(self._sync_subscription)
        self._start_beat()
        with self._view_lock:
            self.view.resync()
        # act now rather than when the consumer has subscribed (a Celery loop turn later)
        self.reconcile("leader elected")

    def _demoted(self) -> None:
        self.is_leader = False
        log.warning("lost leadership", extra={"master_id": self.master_id})
        self.consumer.call_soon(self._sync_subscription)
        self._stop_beat()

    def _start_beat(self) -> None:
        app.conf.beat_schedule = {
            "health": {"task": TaskName.HEALTH_TICK, "schedule": self.settings.health_interval},
            "reconcile": {
                "task": TaskName.RECONCILE,
                "schedule": self.settings.reconcile_interval,
                "args": ["periodic"],
            },
            "autoscale": {
                "task": TaskName.AUTOSCALE_TICK,
                "schedule": self.settings.autoscale_tick,
            },
        }
        if self.settings.backup_interval > 0:
            self.backups.elected()
            app.conf.beat_schedule["backup"] = {
                "task": TaskName.BACKUP_TICK,
                "schedule": tick_interval(self.settings),
            }
        for entry in app.conf.beat_schedule.values():
            entry["options"] = {"queue": naming.MASTER_QUEUE, "expires": 30}
        self._beat = Service(app, max_interval=1, scheduler_cls=Scheduler)
        self._beat_thread = threading.Thread(
            target=self._beat.start, name="master-beat", daemon=True
        )
        self._beat_thread.start()

    def _sync_subscription(self) -> None:
        """Consume grid.master exactly while leading (runs on the consumer's thread).

        Decided when it runs, not when it was queued: calls queued during a broker outage
        run after the reconnect, and a queued 'cancel' from a demotion must not undo the
        re-election that followed it (seen in a Sentinel failover)."""
        consumer = self.consumer
        if consumer.task_consumer is None:  # restarting: its start() queues another sync
            return
        consuming = consumer.task_consumer.consuming_from(naming.MASTER_QUEUE)
        if self.is_leader and not consuming:
            consumer.add_task_queue(naming.MASTER_QUEUE)
        elif not self.is_leader and consuming:
            consumer.cancel_task_queue(naming.MASTER_QUEUE)

    def _stop_beat(self) -> None:
        if self._beat is not None:
            self._beat.stop()
        if self._beat_thread is not None:
            self._beat_thread.join(timeout=5)
        self._beat = None
        self._beat_thread = None

    def shutdown(self) -> None:
        self._stop.set()
        if self._election_thread is not None:
            self._election_thread.join(timeout=5)
        self._stop_beat()
        if self.is_leader:
            self.is_leader = False
            with contextlib.suppress(redis.RedisError):
                self.state.release_lease(naming.leader_key(), self.token)

    # ---- ticks (run only on the leader) --------------------------------------------------

    def _leading(self) -> bool:
        """Still the leader right now (checked in Redis, not from memory)."""
        return self.is_leader and self.state.lease_holder(naming.leader_key()) == self.token

    def reconcile(self, reason: str = "") -> dict[str, Any]:
        """Diff desired against actual and act; one pass at a time.

        A call that finds a pass running leaves its request to that pass, which runs once
        more when it ends (so whatever was written before the call is acted on), and returns
        at once: requests coalesce and a worker thread never waits behind another pass."""
        self._reconcile_wanted.set()
        summary: dict[str, Any] = {"queued": reason}
        while self._reconcile_wanted.is_set():
            if not self._reconcile_lock.acquire(blocking=False):
                return summary  # the running pass sees the request when it ends
            try:
                while self._reconcile_wanted.is_set():
                    self._reconcile_wanted.clear()
                    summary = self._reconcile(reason)
            finally:
                self._reconcile_lock.release()
        return summary

    def _reconcile(self, reason: str) -> dict[str, Any]:
        if not self._leading():
            return {"skipped": "not the leader"}
        version, agents, nodes = self._view_snapshot()
        desired = self.state.desired()
        rules = self._placement_rules()
        pool_state = self.state.pool_status()
        inputs = (version, desired, rules, pool_state)
        now = time.time()
        if inputs == self._last_plan and now < self._plan_deadline:
            return {"changed": False}  # nothing read has changed and no timer is due
        result = plan(
            desired,
            nodes,
            agents,
            rules,
            now=now,
            spawn_timeout=self.settings.spawn_timeout,
            pool_state=pool_state,
        )
        if result.empty:
            self._last_plan = inputs
            self._plan_deadline = next_deadline(nodes, pool_state, self.settings.spawn_timeout, now)
            return {"changed": False}
        self._last_plan = None
        summary = apply_plan(self.state, self.events, self.dispatcher, result)
        if summary["spawned"] or summary["stopped"] or summary["removed"]:
            log.info("reconciled (%s): %s", reason, summary, extra={"master_id": self.master_id})
        return summary

    def health_tick(self) -> dict[str, Any]:
        """Agent transitions and the cluster's state. One pass at a time (a tick that finds
        one running is skipped); replacing an offline agent's nodes is asked of a reconcile
        task, so a long reconcile never delays the next health pass, nor the reverse."""
        if not self._leading():
            return {"skipped": "not the leader"}
        if not self._health_lock.acquire(blocking=False):
            return {"skipped": "a health pass is running"}
        try:
            changes = check_agents(self.state, self.events, self.settings, time.time())
            if any(c.after == AgentStatus.OFFLINE for c in changes):
                self.dispatcher.reconcile("agent offline")
            with self._fresh_view() as view:  # its census is kept as records change: O(agents)
                agents, census = view.agent_list(), view.census.copy()
            cluster = update_cluster_state(self.state, self.events, agents, census)
            return {"transitions": len(changes), "cluster": cluster}
        finally:
            self._health_lock.release()

    @contextlib.contextmanager
    def _fresh_view(self) -> Iterator[FleetView]:
        """The view brought up to date, held for the block (the passes share it): copy out
        what is needed and let go."""
        with self._view_lock:
            self.view.refresh()
            yield self.view

    def _view_snapshot(self) -> tuple[int, list[AgentRecord], list[NodeRecord]]:
        """The view brought up to date, as (version, agents, nodes) lists the caller owns."""
        with self._fresh_view() as view:
            return view.version, view.agent_list(), view.node_list()

    def autoscale_tick(self) -> dict[str, Any]:
        """Evaluate the due policies. One pass at a time, like the health pass: a tick that
        finds one running is skipped (the next tick evaluates what is due then)."""
        if not self._leading():
            return {"skipped": "not the leader"}
        if not self._autoscale_lock.acquire(blocking=False):
            return {"skipped": "an autoscale pass is running"}
        try:
            return run_autoscaler(self.state, self.events, self.settings, self.reconcile)
        finally:
            self._autoscale_lock.release()

    def backup_tick(self) -> dict[str, Any]:
        """Start a scheduled backup if one is due (on its own thread: see `backups`)."""
        if not self._leading():
            return {"skipped": "not the leader"}
        return self.backups.tick()

    def _placement_rules(self) -> dict[str, Any]:
        return placement_rules(self.state.r)


def leader_pages(state: GridState, master_id: str | None = None) -> str | None:
    """URL of the leading master's pages ("" when it serves none); None until the current
    leader (`master_id`, if given) has written its info (an earlier leader's does not count)."""
    holder = state.lease_holder(naming.leader_key())
    info = state.leader_info()
    if holder is None or info.get("token") != holder:
        return None
    if master_id is not None and info.get("master_id") != master_id:
        return None
    return str(info.get("http", ""))


class LeadershipStep(bootsteps.StartStopStep):
    """Consumer bootstep: hands the consumer to the runtime so it can (un)subscribe.

    It does not shut the runtime down with the consumer: a worker that died of a broker
    outage is started again in the same process (`run_worker`) and the runtime, its election
    thread included, must live on; `grid master` shuts it down when the worker has ended."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, parent: Any) -> None:
        current_master().start(parent)
