"""Agents killed with kill -9: replaced once offline and fenced on return, or adopted if quick."""

from __future__ import annotations

import time

import psutil

from tests.chaos.conftest import GridFactory
from tests.chaos.harness import FleetWatch, assert_invariants
from tests.gridproc import wait_gone


def test_killed_agent_is_replaced_and_its_stale_nodes_fenced(chaos: GridFactory) -> None:
    grid = chaos()
    grid.up()
    grid.scale(4)
    nodes = grid.wait_settled()
    on1 = {n.node_id: n for n in nodes if n.agent_id == "agent-1"}
    assert on1, "placement put nothing on agent-1"
    old = {nid: psutil.Process(n.pid) for nid, n in on1.items()}  # type: ignore[arg-type]
    mark = grid.mark()

    with FleetWatch(grid.redis_url) as watch:
        killed_at = time.time()
        grid.kill("agent-1")
        degraded = grid.wait_event("agent_degraded", since=mark, agent_id="agent-1")[0]
        offline = grid.wait_event("agent_offline", since=mark, agent_id="agent-1")[0]
        assert degraded.ts < offline.ts
        lost = grid.wait_event("node_lost", since=mark, agent_id="agent-1", count=len(on1))
        assert {e.node_id for e in lost} == set(on1)
        healed = grid.wait_settled(timeout=30)
        full_strength = time.time() - killed_at
        assert {n.agent_id for n in healed} == {"agent-2"}
        assert not set(on1) & {n.node_id for n in healed}
        # the dead agent's nodes live on in their own process groups, now owned by nobody
        assert all(p.is_running() for p in old.values())

        back = grid.mark()
        grid.start_agent("agent-1")
        fenced = grid.wait_event("node_fenced", since=back, agent_id="agent-1", count=len(on1))
        assert {e.node_id for e in fenced} == set(on1)
        for proc in old.values():
            wait_gone(proc.pid)
        grid.wait_agents("agent-1")
        # the master records the return with the real downtime: from its last beat to now
        recovered = grid.wait_event("agent_recovered", since=back, agent_id="agent-1")[0]
        assert recovered.data["was"] == "offline"
        assert recovered.data["downtime_s"] >= recovered.ts - killed_at - 1.5
        assert recovered.data["downtime_s"] <= recovered.ts - killed_at + 1.5
        assert_invariants(grid)
        # fencing is quick: the returning agent heartbeats at once, it is never seen silent
        silent = grid.find_events("agent_degraded", "agent_offline", since=back, agent_id="agent-1")
        assert not silent, [(e.type, e.message) for e in silent]
    print(
        f"\nagent kill -> offline {offline.ts - killed_at:.2f}s, "
        f"pool at strength {full_strength:.2f}s"
    )
    assert watch.samples > 20
    assert watch.max_running["default"] <= 4, watch.max_running
    assert not grid.find_events("node_adopted", since=mark)


def test_agent_restarted_quickly_adopts_its_nodes(chaos: GridFactory) -> None:
    # a wide margin before offline, so the restart surely comes back in time on a busy machine
    grid = chaos(env={"GRID_DEGRADED_AFTER": "4", "GRID_OFFLINE_AFTER": "10"})
    grid.up()
    grid.scale(4)
    nodes = grid.wait_settled()
    on1 = {n.node_id: n for n in nodes if n.agent_id == "agent-1"}
    assert on1
    mark = grid.mark()

    grid.kill("agent-1")
    grid.start_agent("agent-1")
    adopted = grid.wait_event("node_adopted", since=mark, agent_id="agent-1", count=len(on1))
    assert {e.node_id for e in adopted} == set(on1)
    grid.wait_agents("agent-1")
    for nid, before in on1.items():
        now = grid.state.node(nid)
        assert now is not None and now.status == "running"
        assert (now.pid, now.restart_count, now.agent_id) == (
            before.pid,
            before.restart_count,
            "agent-1",
        )
    surprises = grid.find_events(
        "node_crashed", "node_restarted", "node_fenced", "node_lost", "agent_offline",
        "spawn_requested", "stop_requested", since=mark,
    )  # fmt: skip
    assert not surprises, [(e.type, e.node_id) for e in surprises]
    assert_invariants(grid)

    # the adopted nodes are supervised by the new agent process
    victim = next(iter(on1.values()))
    again = grid.mark()
    grid.kill_node(victim)
    crashed = grid.wait_event("node_crashed", since=again, node_id=victim.node_id)[0]
    assert crashed.agent_id == "agent-1"
    grid.wait_event("node_restarted", since=again, node_id=victim.node_id)
    grid.wait_settled()
    assert_invariants(grid)
