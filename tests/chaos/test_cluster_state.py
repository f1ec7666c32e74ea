"""Cluster state events: one per transition (healthy -> degraded -> healthy), not one per check."""

from __future__ import annotations

import os
import signal
import time

from tests.chaos.conftest import GridFactory
from tests.chaos.harness import assert_invariants
from tests.helpers import wait_for

CLUSTER_EVENTS = ("cluster_healthy", "cluster_degraded", "cluster_critical")


def test_cluster_state_is_emitted_once_per_transition(chaos: GridFactory) -> None:
    # health checks every 0.5 s; an agent silent for 1.5 s is degraded, offline only after 10 s
    grid = chaos(env={"GRID_DEGRADED_AFTER": "1.5", "GRID_OFFLINE_AFTER": "10"})
    grid.up()
    grid.scale(2)
    grid.wait_settled()
    wait_for(lambda: grid.client.get("grid:cluster-state") == "healthy", 10, what="cluster healthy")
    mark = grid.mark()

    agent = grid.procs["agent-2"]
    os.kill(agent.pid, signal.SIGSTOP)  # silent, but alive: degraded, not offline
    try:
        grid.wait_event("agent_degraded", since=mark, agent_id="agent-2")
        grid.wait_event("cluster_degraded", since=mark)

        def silent_for(seconds: float) -> bool:
            rec = grid.state.agent("agent-2")
            return rec is not None and time.time() - rec.last_heartbeat >= seconds

        wait_for(lambda: silent_for(4.5), 10, what="6+ health checks while degraded")
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    recovered = grid.wait_event("agent_recovered", since=mark, agent_id="agent-2")[0]
    grid.wait_event("cluster_healthy", since=mark)

    def beats_after(ts: float) -> bool:
        rec = grid.state.agent("agent-2")
        return rec is not None and rec.last_heartbeat - ts >= 2.5

    wait_for(lambda: beats_after(recovered.ts), 10, what="healthy for 5+ health checks")
    cluster = [e.type for e in grid.find_events(*CLUSTER_EVENTS, since=mark)]
    assert cluster == ["cluster_degraded", "cluster_healthy"], cluster
    agent_events = [e.type for e in grid.find_events(since=mark, agent_id="agent-2")
                    if e.type.startswith("agent_")]  # fmt: skip
    assert agent_events == ["agent_degraded", "agent_recovered"], agent_events
    assert_invariants(grid)
