"""The reconciler's pure `plan` (grid.workers.master.reconciler): desired against actual, no I/O."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from grid.core.placement_rules import PlacementRules
from grid.core.state import AgentRecord, NodeRecord
from grid.workers.master.reconciler import Plan, next_deadline, plan

NOW = 10_000.0


def agent(
    agent_id: str,
    max_nodes: int = 10,
    status: str = "online",
    draining: bool = False,
    cost: float = 0.0,
    **labels: str,
) -> AgentRecord:
    return AgentRecord(
        agent_id=agent_id,
        max_nodes=max_nodes,
        status=status,
        draining=draining,
        cost=cost,
        labels=dict(labels),
    )


def node(
    node_id: str,
    agent_id: str,
    status: str = "running",
    pool: str = "default",
    created_at: float = NOW - 10,
    started_at: float = 0.0,
) -> NodeRecord:
    return NodeRecord(
        node_id=node_id,
        pool=pool,
        agent_id=agent_id,
        status=status,
        created_at=created_at,
        started_at=started_at,
    )


def run(
    desired: dict[str, int], nodes: list[NodeRecord], agents: list[AgentRecord], **kwargs: Any
) -> Plan:
    kwargs.setdefault("now", NOW)
    return plan(desired, nodes, agents, **kwargs)


def spawned(result: Plan, pool: str = "default") -> dict[str, int]:
    return dict(Counter(result.pools[pool].spawn_on))


def stopped(result: Plan, pool: str = "default") -> list[str]:
    return [n.node_id for n in result.pools[pool].stop]


# ---- scale up / down ---------------------------------------------------------------------

SCALE_CASES = [
    # (desired, nodes, agents, expected spawns per agent, expected stops, shortfall)
    pytest.param(0, [], [agent("a")], {}, [], 0, id="empty-stays-empty"),
    pytest.param(
        5, [], [agent("a", 2), agent("b", 3)], {"a": 2, "b": 3}, [], 0, id="up-from-zero-spread"
    ),
    pytest.param(
        7,
        [],
        [agent("a", 2), agent("b", 3)],
        {"a": 2, "b": 3},
        [],
        2,
        id="up-past-capacity-shortfall",
    ),
    pytest.param(
        3,
        [node("n1", "a")],
        [agent("a", 3), agent("b", 3)],
        {"a": 1, "b": 1},
        [],
        0,
        id="up-counts-occupied-slots",
    ),
    pytest.param(
        2,
        [
            node("n1", "a", created_at=1),
            node("n2", "b", created_at=2),
            node("n3", "a", created_at=3),
        ],
        [agent("a"), agent("b")],
        {},
        ["n3"],
        0,
        id="down-newest-first",
    ),
    pytest.param(
        0,
        [
            node("n1", "a"),
            node("n2", "b", status="pending"),
            node("n3", "a", status="starting"),
            node("n4", "b", status="restarting"),
        ],
        [agent("a"), agent("b")],
        {},
        ["n1", "n2", "n3", "n4"],
        0,
        id="down-to-zero-stops-every-active-state",
    ),
    pytest.param(
        2,
        [node("n1", "a"), node("n2", "a", status="stopping")],
        [agent("a", 2)],
        {},
        [],
        1,
        id="stopping-node-holds-its-slot-but-not-the-pool",
    ),
    pytest.param(
        2,
        [node("n1", "a"), node("n2", "b")],
        [agent("a"), agent("b")],
        {},
        [],
        0,
        id="at-size-nothing",
    ),
    pytest.param(
        3,
        [],
        [agent("a", status="degraded"), agent("b", status="offline"), agent("c", draining=True)],
        {},
        [],
        3,
        id="only-online-undrained-agents-take-nodes",
    ),
]


@pytest.mark.parametrize(
    ("desired", "nodes", "agents", "spawns", "stops", "shortfall"), SCALE_CASES
)
def test_scale(
    desired: int,
    nodes: list[NodeRecord],
    agents: list[AgentRecord],
    spawns: dict[str, int],
    stops: list[str],
    shortfall: int,
) -> None:
    result = run({"default": desired}, nodes, agents)
    pp = result.pools["default"]
    assert spawned(result) == spawns
    assert sorted(stopped(result)) == sorted(stops)
    assert pp.shortfall == shortfall
    assert pp.desired == desired
    assert result.remove == []


def test_at_size_plan_is_empty_and_replanning_changes_nothing() -> None:
    nodes = [node("n1", "a"), node("n2", "b")]
    result = run({"default": 2}, nodes, [agent("a"), agent("b")])
    assert result.empty
    assert not run({}, nodes, [agent("a")]).pools  # pools with no desired size are left alone


def test_other_pools_use_capacity_but_are_not_touched() -> None:
    nodes = [node("m1", "a", pool="manual"), node("m2", "a", pool="manual")]
    result = run({"default": 3}, nodes, [agent("a", 3), agent("b", 1)])
    assert spawned(result) == {"a": 1, "b": 1}
    assert result.pools["default"].shortfall == 1
    assert "manual" not in result.pools


def test_pools_share_agents_without_overbooking() -> None:
    result = run({"x": 3, "y": 3}, [], [agent("a", 2), agent("b", 2)])
    total = Counter(result.pools["x"].spawn_on) + Counter(result.pools["y"].spawn_on)
    assert total == {"a": 2, "b": 2}
    assert result.pools["x"].shortfall + result.pools["y"].shortfall == 2


def test_placement_rules_per_pool() -> None:
    rules = {"ssd": PlacementRules(require_labels={"disk": "ssd"})}
    agents = [agent("a", 5, disk="hdd"), agent("b", 2, disk="ssd")]
    result = run({"ssd": 3, "any": 2}, [], agents, rules=rules)
    assert spawned(result, "ssd") == {"b": 2}
    assert result.pools["ssd"].shortfall == 1
    assert spawned(result, "any") == {"a": 2}


def test_cost_strategy_scale_down_stops_the_most_expensive_first() -> None:
    rules = {"default": PlacementRules(strategy="cost")}
    nodes = [node("cheap-new", "a", created_at=9), node("dear-old", "b", created_at=1)]
    result = run({"default": 1}, nodes, [agent("a", cost=1), agent("b", cost=5)], rules=rules)
    assert stopped(result) == ["dear-old"]


# ---- failed, lost and stuck records --------------------------------------------------------


def test_failed_record_removed_and_replaced_avoiding_the_failing_agent() -> None:
    nodes = [node("ok", "b"), node("bad", "a", status="failed")]
    # agent a has the most free room, but the pool just failed there
    result = run({"default": 2}, nodes, [agent("a", 10), agent("b", 3), agent("c", 3)])
    assert [n.node_id for n in result.remove] == ["bad"]
    assert result.timed_out == []
    pp = result.pools["default"]
    assert pp.failures == 1
    assert pp.fail_streak == 1
    assert spawned(result) == {"c": 1}


def test_failing_agent_used_when_nothing_else_fits() -> None:
    nodes = [node("bad", "a", status="failed")]
    result = run({"default": 2}, nodes, [agent("a", 10), agent("b", 1)])
    assert spawned(result) == {"a": 1, "b": 1}
    assert result.pools["default"].shortfall == 0


def test_lost_records_removed_and_replaced_without_backoff() -> None:
    nodes = [node("l1", "gone", status="lost"), node("l2", "gone", status="lost"), node("n", "a")]
    agents = [agent("gone", status="offline"), agent("a", 5), agent("b", 5)]
    result = run({"default": 3}, nodes, agents)
    assert sorted(n.node_id for n in result.remove) == ["l1", "l2"]
    pp = result.pools["default"]
    assert pp.failures == 0 and pp.fail_streak == 0
    assert spawned(result) == {"a": 1, "b": 1}


def test_failed_record_of_an_unmanaged_pool_is_still_removed() -> None:
    result = run({}, [node("m", "a", status="failed", pool="manual")], [agent("a")])
    assert [n.node_id for n in result.remove] == ["m"]
    assert not result.empty


def test_stuck_pending_and_starting_nodes_time_out() -> None:
    nodes = [
        node("stuck-pending", "a", status="pending", created_at=NOW - 61),
        node("stuck-starting", "a", status="starting", created_at=NOW - 500, started_at=NOW - 70),
        node("young-pending", "a", status="pending", created_at=NOW - 59),
        node("slow-start", "a", status="starting", created_at=NOW - 500, started_at=NOW - 5),
        node("old-running", "a", status="running", created_at=NOW - 5000),
    ]
    result = run({"default": 5}, nodes, [agent("a", 10), agent("b", 10)], spawn_timeout=60)
    assert sorted(result.timed_out) == ["stuck-pending", "stuck-starting"]
    assert sorted(n.node_id for n in result.remove) == ["stuck-pending", "stuck-starting"]
    pp = result.pools["default"]
    assert pp.failures == 2
    assert spawned(result) == {"b": 2}  # replaced away from the agent that did not start them


# ---- backoff after repeated failures --------------------------------------------------------


def test_backoff_grows_with_repeated_failures_and_blocks_placement() -> None:
    agents = [agent("a", 10)]
    state: dict[str, dict[str, Any]] = {}
    now = NOW
    delays = []
    for _ in range(5):
        result = run(
            {"default": 1},
            [node("x", "a", status="failed")],
            agents,
            now=now,
            pool_state=state,
            max_backoff=4.0,
        )
        pp = result.pools["default"]
        delays.append(round(pp.retry_at - now, 3) if pp.retry_at > now else 0.0)
        state = {"default": {"fail_streak": pp.fail_streak, "retry_at": pp.retry_at}}
        if pp.retry_at > now:
            assert pp.spawn_on == []  # backing off: nothing placed in this pass
            # still nothing before the retry time, then placement resumes
            early = run({"default": 1}, [], agents, now=pp.retry_at - 0.01, pool_state=state)
            assert early.pools["default"].spawn_on == []
            late = run({"default": 1}, [], agents, now=pp.retry_at, pool_state=state)
            assert late.pools["default"].spawn_on == ["a"]
            assert late.pools["default"].fail_streak == pp.fail_streak  # not reset yet
        else:
            assert pp.spawn_on == ["a"]  # first failure: replaced at once
        now += 10
    assert delays == [0.0, 1.0, 2.0, 4.0, 4.0]  # capped at max_backoff


def test_backoff_resets_once_a_node_runs() -> None:
    state = {"default": {"fail_streak": 4, "retry_at": NOW + 30}}
    result = run({"default": 2}, [node("n", "a")], [agent("a")], pool_state=state)
    pp = result.pools["default"]
    assert pp.fail_streak == 0 and pp.retry_at == 0.0
    assert spawned(result) == {"a": 1}


# ---- draining agents --------------------------------------------------------------------------


def test_draining_agent_nodes_replaced_first_and_stopped_once_replacements_run() -> None:
    agents = [agent("old", 10, draining=True), agent("new", 10)]
    on_old = [node("o1", "old", created_at=1), node("o2", "old", created_at=2)]

    # 1. replacements are placed elsewhere; nothing on the draining agent stops yet
    first = run({"default": 2}, on_old, agents)
    assert spawned(first) == {"new": 2}
    assert stopped(first) == []

    # 2. replacements placed but not running yet: still nothing stops
    pending = [node("r1", "new", status="pending"), node("r2", "new", status="starting")]
    second = run({"default": 2}, on_old + pending, agents)
    assert spawned(second) == {} and stopped(second) == []

    # 3. one replacement runs: exactly one old node may go
    half = [node("r1", "new"), node("r2", "new", status="starting")]
    third = run({"default": 2}, on_old + half, agents)
    assert spawned(third) == {} and len(stopped(third)) == 1

    # 4. all replacements run: the rest of the draining agent's nodes stop
    done = [node("r1", "new"), node("r2", "new")]
    fourth = run({"default": 2}, on_old + done, agents)
    assert sorted(stopped(fourth)) == ["o1", "o2"]
    assert spawned(fourth) == {}


def test_draining_with_no_room_elsewhere_keeps_the_nodes() -> None:
    agents = [agent("old", 10, draining=True), agent("full", 1)]
    nodes = [node("o1", "old"), node("f1", "full", pool="manual")]
    result = run({"default": 1}, nodes, agents)
    assert stopped(result) == []
    assert result.pools["default"].shortfall == 1


# ---- what the stored pool status says ------------------------------------------------------


def test_a_cleared_shortfall_is_recorded_then_the_plan_is_empty() -> None:
    nodes = [node("n1", "a"), node("n2", "a")]
    stored = {"default": {"shortfall": 2, "fail_streak": 0, "retry_at": 0.0}}
    result = run({"default": 2}, nodes, [agent("a", 2)], pool_state=stored)
    pp = result.pools["default"]
    assert pp.shortfall == 0 and not pp.spawn_on and not pp.stop
    assert not result.empty  # the stale shortfall of 2 must be overwritten
    now_stored = {"default": {"shortfall": 0, "fail_streak": 0, "retry_at": 0.0}}
    assert run({"default": 2}, nodes, [agent("a", 2)], pool_state=now_stored).empty


def test_an_unchanged_shortfall_is_still_reported_each_pass() -> None:
    stored = {"default": {"shortfall": 1, "fail_streak": 0, "retry_at": 0.0}}
    result = run(
        {"default": 3}, [node("n1", "a"), node("n2", "a")], [agent("a", 2)], pool_state=stored
    )
    assert result.pools["default"].shortfall == 1 and not result.empty


def test_next_deadline_is_the_earliest_future_timer() -> None:
    nodes = [
        node("n1", "a", status="pending", created_at=NOW - 10),  # times out at NOW + 50
        node("n2", "a", status="starting", created_at=NOW - 100, started_at=NOW - 5),
        node("n3", "a", status="running", created_at=NOW - 100),
    ]
    pools = {"default": {"retry_at": NOW + 20.0}, "other": {"retry_at": NOW - 1.0}}
    assert next_deadline(nodes, pools, 60.0, NOW) == NOW + 20.0
    assert next_deadline(nodes, {}, 60.0, NOW) == NOW + 50.0
    assert next_deadline(nodes[2:], pools | {"default": {}}, 60.0, NOW) == float("inf")


@pytest.mark.parametrize("status", ["stopping", "running", "pending", "restarting"])
def test_records_of_an_agent_that_is_gone_are_collected(status: str) -> None:
    """No agent record (it unregistered, or was deleted): nothing will ever act on its nodes,
    and it never goes offline either. Its records are removed and the pool refilled."""
    result = run({"default": 1}, [node("n1", "gone", status=status)], [agent("a1")])
    assert [n.node_id for n in result.remove] == ["n1"]
    assert spawned(result) == {"a1": 1}
    assert result.pools["default"].failures == 0  # not the pool's fault: no backoff


def test_a_stopping_record_of_a_live_agent_is_left_to_it() -> None:
    result = run({"default": 0}, [node("n1", "a1", status="stopping")], [agent("a1")])
    assert result.remove == []
