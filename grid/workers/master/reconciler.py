"""Desired against actual: the pure `plan` and the `apply_plan` that writes and dispatches.

Level-triggered: `plan` looks only at what Redis holds now, so any master can run it at any
time and running it twice changes nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from grid.core import naming
from grid.core.events import EventLog, EventType
from grid.core.placement_rules import DEFAULT_RULES, PlacementRules
from grid.core.state import AgentRecord, AgentStatus, GridState, NodeRecord, NodeStatus
from grid.workers.master.placement import (
    AgentSlot,
    NodeSlot,
    choose_victims,
    place,
)

# Nodes that still hold a slot on their agent.
_OCCUPYING = {
    NodeStatus.PENDING,
    NodeStatus.STARTING,
    NodeStatus.RUNNING,
    NodeStatus.RESTARTING,
    NodeStatus.STOPPING,
}


class Dispatcher(Protocol):
    def dispatch(
        self, spawns: Mapping[str, Sequence[str]], stops: Mapping[str, Sequence[str]]
    ) -> None:
        """Send each agent its spawns and its stops (node ids by agent id)."""


@dataclass
class PoolPlan:
    pool: str
    desired: int
    active: int
    spawn_on: list[str] = field(default_factory=list)  # an agent id per new node
    stop: list[NodeRecord] = field(default_factory=list)
    shortfall: int = 0
    failures: int = 0  # failed spawns/crash loops cleaned up in this pass
    fail_streak: int = 0  # consecutive passes with failures
    retry_at: float = 0.0  # no placement before this time (backoff after failures)
    stale: bool = False  # the stored pool status (shortfall, backoff) no longer holds


@dataclass
class Plan:
    pools: dict[str, PoolPlan] = field(default_factory=dict)
    remove: list[NodeRecord] = field(default_factory=list)  # failed, lost or timed-out records
    timed_out: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing to do and nothing new to record."""
        return not self.remove and all(
            not p.spawn_on and not p.stop and not p.shortfall and not p.failures and not p.stale
            for p in self.pools.values()
        )


def eligible(agent: AgentRecord) -> bool:
    return agent.status == AgentStatus.ONLINE and not agent.draining


def plan(
    desired: Mapping[str, int],
    nodes: Sequence[NodeRecord],
    agents: Sequence[AgentRecord],
    rules: Mapping[str, PlacementRules] | None = None,
    now: float | None = None,
    spawn_timeout: float = 60.0,
    pool_state: Mapping[str, Mapping[str, Any]] | None = None,
    max_backoff: float = 60.0,
) -> Plan:
    """What to start, stop and clean up so every managed pool reaches its desired size.

    A failed node is replaced in the same pass, away from the agent it failed on if another
    fits; a pool whose nodes keep failing (in consecutive passes) is then backed off
    exponentially (1 s, 2 s, ... max_backoff) instead of being respawned on every pass.
    """
    rules = rules or {}
    pool_state = pool_state or {}
    now = time.time() if now is None else now
    result = Plan()
    failed_on: dict[str, set[str]] = {}
    failures: dict[str, int] = {}
    live: list[NodeRecord] = []
    known = {a.agent_id for a in agents}
    for node in nodes:
        stuck = (
            node.status in (NodeStatus.PENDING, NodeStatus.STARTING)
            and now - max(node.created_at, node.started_at) > spawn_timeout
        )
        # an agent whose record is gone will never act on its nodes (nor go offline): its
        # records are collected like lost ones, stopping ones included
        orphan = node.agent_id not in known
        if node.status in (NodeStatus.FAILED, NodeStatus.LOST) or stuck or orphan:
            result.remove.append(node)
            if stuck:
                result.timed_out.append(node.node_id)
            if node.status != NodeStatus.LOST and not orphan:
                failed_on.setdefault(node.pool, set()).add(node.agent_id)
                failures[node.pool] = failures.get(node.pool, 0) + 1
        else:
            live.append(node)

    occupied: dict[str, int] = {}
    for node in live:
        if node.status in _OCCUPYING:
            occupied[node.agent_id] = occupied.get(node.agent_id, 0) + 1
    free = {
        a.agent_id: max(0, a.max_nodes - occupied.get(a.agent_id, 0)) for a in agents if eligible(a)
    }
    by_id = {a.agent_id: a for a in agents}

    for pool in sorted(desired):
        want = desired[pool]
        pool_rules = rules.get(pool, DEFAULT_RULES)
        pool_active = [n for n in live if n.pool == pool and n.active]
        # nodes on draining agents are moved: replaced first, stopped once replacements run
        moving = [n for n in pool_active if by_id.get(n.agent_id) and by_id[n.agent_id].draining]
        moving_ids = {n.node_id for n in moving}
        active = [n for n in pool_active if n.node_id not in moving_ids]
        pp = PoolPlan(pool=pool, desired=want, active=len(pool_active))
        before = pool_state.get(pool, {})
        pp.failures = failures.get(pool, 0)
        pp.fail_streak = int(before.get("fail_streak", 0))
        pp.retry_at = float(before.get("retry_at", 0.0))
        if pp.failures:
            pp.fail_streak += 1
            if pp.fail_streak > 1:  # a first failure is replaced at once, on another agent
                pp.retry_at = now + min(max_backoff, 2.0 ** (pp.fail_streak - 2))
        elif any(n.status == NodeStatus.RUNNING for n in active) or len(active) >= want:
            pp.fail_streak, pp.retry_at = 0, 0.0
        if len(active) < want and now < pp.retry_at:
            pass  # backing off after failures: place nothing in this pass
        elif len(active) < want:
            pp.spawn_on, pp.shortfall = _place(
                want - len(active), free, by_id, pool_rules, failed_on.get(pool, set())
            )
        elif len(active) > want:
            slots = [NodeSlot(n.node_id, n.agent_id, n.created_at) for n in active]
            agent_slots = [_slot(a, 0) for a in agents]
            victims = choose_victims(len(active) - want, slots, agent_slots, pool_rules)
            by_node = {n.node_id: n for n in active}
            pp.stop = [by_node[node_id] for node_id in victims]
        running = sum(1 for n in active if n.status == NodeStatus.RUNNING)
        movable = min(len(moving), max(0, running + len(moving) - want))
        pp.stop += moving[:movable]
        pp.stale = (int(before.get("shortfall", 0)), int(before.get("fail_streak", 0))) != (
            pp.shortfall,
            pp.fail_streak,
        )
        result.pools[pool] = pp
    return result


def next_deadline(
    nodes: Sequence[NodeRecord],
    pool_state: Mapping[str, Mapping[str, Any]],
    spawn_timeout: float,
    now: float,
) -> float:
    """When time alone can change an empty plan: a starting node reaching its spawn timeout,
    or a pool's failure backoff ending. Until then the same inputs give the same plan."""
    deadlines = [
        max(n.created_at, n.started_at) + spawn_timeout
        for n in nodes
        if n.status in (NodeStatus.PENDING, NodeStatus.STARTING)
    ]
    deadlines += [float(s.get("retry_at", 0.0)) for s in pool_state.values()]
    future = [d for d in deadlines if d > now]
    return min(future, default=float("inf"))


def _place(
    count: int,
    free: dict[str, int],
    by_id: Mapping[str, AgentRecord],
    rules: PlacementRules,
    avoid: set[str],
) -> tuple[list[str], int]:
    """Place `count` nodes, avoiding agents where the pool just failed unless nothing else fits.

    Takes the chosen slots out of `free`; returns (agent id per node, shortfall).
    """
    first = place(count, _slots(free, by_id, exclude=avoid), rules)
    for agent_id in first.agent_ids:
        free[agent_id] -= 1
    if not (first.shortfall and avoid):
        return first.agent_ids, first.shortfall
    second = place(first.shortfall, _slots(free, by_id), rules)
    for agent_id in second.agent_ids:
        free[agent_id] -= 1
    return first.agent_ids + second.agent_ids, second.shortfall


def _slot(agent: AgentRecord, free: int) -> AgentSlot:
    return AgentSlot(agent.agent_id, free, agent.cost, agent.platform, agent.labels)


def _slots(
    free: Mapping[str, int], by_id: Mapping[str, AgentRecord], exclude: set[str] | None = None
) -> list[AgentSlot]:
    return [
        _slot(by_id[agent_id], n)
        for agent_id, n in free.items()
        if n > 0 and agent_id not in (exclude or set())
    ]


def apply_plan(
    state: GridState,
    events: EventLog,
    dispatcher: Dispatcher,
    result: Plan,
    node_options: Mapping[str, Mapping[str, Any]] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Write the plan to Redis, then send the tasks. Returns a summary for logs and tests."""
    now = time.time() if now is None else now
    pipe = state.pipeline()
    # events may live on another Redis (GRID_EVENTS_URL): their own batch, written after
    # the records so that an event never announces a write that did not happen
    epipe = events.client.pipeline(transaction=False)
    for rec in result.remove:
        state.delete_node(rec.agent_id, rec.node_id, pipe=pipe)
    for node_id in result.timed_out:
        events.emit(
            EventType.SPAWN_FAILED,
            f"node {node_id} did not start within the spawn timeout: replacing it",
            node_id=node_id,
            pipe=epipe,
        )

    spawns: dict[str, list[str]] = {}
    stops: dict[str, list[str]] = {}
    total_new = sum(len(p.spawn_on) for p in result.pools.values())
    generation = state.reserve_generations(total_new)
    previous = state.pool_status()
    for pp in result.pools.values():
        opts = dict((node_options or {}).get(pp.pool, {}))
        new_records = []
        for agent_id in pp.spawn_on:
            generation += 1
            node_id = naming.new_node_id(pp.pool)
            new_records.append(
                NodeRecord(
                    node_id=node_id,
                    pool=pp.pool,
                    agent_id=agent_id,
                    status=NodeStatus.PENDING,
                    generation=generation,
                    created_at=now,
                    memory_mb=opts.get("memory_mb"),
                )
            )
            spawns.setdefault(agent_id, []).append(node_id)
            events.emit(
                EventType.SPAWN_REQUESTED,
                f"node {node_id} placed on {agent_id}",
                agent_id=agent_id,
                node_id=node_id,
                pool=pp.pool,
                pipe=epipe,
            )
        state.create_nodes(new_records, pipe=pipe)
        for rec in pp.stop:
            state.set_node_status(rec.agent_id, [rec.node_id], NodeStatus.STOPPING, pipe)
            stops.setdefault(rec.agent_id, []).append(rec.node_id)
            events.emit(
                EventType.STOP_REQUESTED,
                f"node {rec.node_id} on {rec.agent_id} asked to stop",
                agent_id=rec.agent_id,
                node_id=rec.node_id,
                pool=pp.pool,
                pipe=epipe,
            )
        status = {
            "desired": pp.desired,
            "active": pp.active,
            "placed": len(pp.spawn_on),
            "stopping": len(pp.stop),
            "shortfall": pp.shortfall,
            "fail_streak": pp.fail_streak,
            "retry_at": pp.retry_at,
            "updated_at": now,
        }
        state.set_pool_status(pp.pool, status, pipe=pipe)
        before = previous.get(pp.pool, {}).get("shortfall", 0)
        if pp.shortfall and pp.shortfall != before:
            events.emit(
                EventType.CAPACITY_SHORTFALL,
                f"pool {pp.pool}: {pp.shortfall} node(s) do not fit on any healthy agent",
                pool=pp.pool,
                pipe=epipe,
                shortfall=pp.shortfall,
                desired=pp.desired,
            )
    pipe.execute()
    epipe.execute()
    dispatcher.dispatch(spawns, stops)
    return {
        "spawned": sum(len(v) for v in spawns.values()),
        "stopped": sum(len(v) for v in stops.values()),
        "removed": len(result.remove),
        "shortfall": {p: pp.shortfall for p, pp in result.pools.items() if pp.shortfall},
    }
