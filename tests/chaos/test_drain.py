"""Graceful drain: replacements run before the drained agent's nodes stop; undrain reopens it."""

from __future__ import annotations

import json

from tests.chaos.conftest import GridFactory
from tests.chaos.harness import FleetWatch, assert_invariants


def test_drain_moves_nodes_make_before_break_and_undrain_reopens(chaos: GridFactory) -> None:
    grid = chaos()
    grid.up()
    grid.scale(4)
    nodes = grid.wait_settled()
    on1 = {n.node_id for n in nodes if n.agent_id == "agent-1"}
    assert on1
    mark = grid.mark()

    with FleetWatch(grid.redis_url) as watch:
        result = grid.cli("drain", "agent-1", "--timeout", "60s")
        assert result.returncode == 0, result.stderr
        nodes = grid.wait_settled()
    assert {n.agent_id for n in nodes} == {"agent-2"}
    assert watch.min_running["default"] >= 4, (
        f"fleet dipped to {watch.min_running} during the drain"
    )

    # make before break: each stop of a drained node follows one more healthy replacement
    replaced = stopped = 0
    for ev in grid.find_events("spawn_succeeded", "stop_requested", since=mark):
        if ev.type == "spawn_succeeded" and ev.agent_id == "agent-2":
            replaced += 1
        elif ev.type == "stop_requested" and ev.node_id in on1:
            stopped += 1
            assert replaced >= stopped, (
                f"{ev.node_id} asked to stop with {replaced} replacement(s) running"
            )
    assert stopped == len(on1) and replaced == len(on1)
    stop_done = grid.find_events("stop_succeeded", since=mark, agent_id="agent-1")
    assert {e.node_id for e in stop_done} == on1
    agents = {a["agent_id"]: a for a in json.loads(grid.cli("agents", "--json").stdout)}
    assert agents["agent-1"]["draining"] is True and agents["agent-1"]["status"] == "online"
    assert_invariants(grid)

    undrained = grid.mark()
    result = grid.cli("undrain", "agent-1")
    assert result.returncode == 0, result.stderr
    grid.scale(6)
    nodes = grid.wait_settled()
    placed = grid.find_events("spawn_requested", since=undrained)
    assert [e.agent_id for e in placed] == ["agent-1", "agent-1"], [
        (e.node_id, e.agent_id) for e in placed
    ]
    assert sum(1 for n in nodes if n.agent_id == "agent-1") == 2
    assert_invariants(grid)
