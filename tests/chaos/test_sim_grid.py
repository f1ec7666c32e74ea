"""200 simulated agents under churn on a real master: the chaos invariants, health and placement.

`grid sim` runs the agents (real registration, heartbeats and queue consumption; simulated
nodes). Once the pool is at size, SIGUSR1 starts the chaos: 5 agents (holding nodes) go
silent, nodes crash at 4/s (restarted by the agents' supervision), and agents leave and join
at 1/s, for 12 s. Then every invariant of the chaos suite must hold again, the silent agents
must have been marked offline within the offline timeout and no other agent ever marked
degraded or offline, and no agent may ever have held more nodes than its capacity.
"""

from __future__ import annotations

import signal

from grid.core.events import EventType
from grid.core.state import AgentStatus
from tests.chaos.conftest import GridFactory
from tests.chaos.harness import assert_invariants
from tests.chaos.sim_harness import CapacityWatch, log_line, sim_violations
from tests.gridproc import FAST_TIMINGS
from tests.helpers import wait_for

AGENTS = 200
CAPACITY = 5
NODES = 600
SILENT = 5
CHAOS_FOR = 12.0
# A node placed on an agent in the instant it leaves waits this long before it is replaced.
ENV = {"GRID_SPAWN_TIMEOUT": "10"}


def test_simulated_grid_under_churn(chaos: GridFactory) -> None:
    grid = chaos(env=ENV)
    grid.start_master()
    grid.wait_leader()
    sim = grid.start_sim(
        "sim", "--agents", str(AGENTS), "--nodes-per-agent", str(CAPACITY),
        "--churn", "1/s", "--crash-rate", "4/s", "--silent", str(SILENT),
        "--chaos-on-signal", "--chaos-for", f"{CHAOS_FOR}s", "--seed", "9",
    )  # fmt: skip
    host_line = str(wait_for(lambda: log_line(grid.log("sim"), "200 simulated agents registered"),
                         60, what="the simulated agents registered"))  # fmt: skip
    host_url = host_line.rsplit("sim host ", 1)[1]
    grid.wait_agents(*(f"sim-{i:05d}" for i in range(1, AGENTS + 1)), timeout=30)
    grid.scale(NODES)
    grid.wait_settled(timeout=60)
    assert_invariants(grid, violations=sim_violations(host_url))

    mark = grid.mark()
    with CapacityWatch(grid.redis_url) as capacity:
        sim.send_signal(signal.SIGUSR1)
        silent = str(wait_for(lambda: log_line(grid.log("sim"), "silent agents:"), 10,
                              what="the silent agents")).split()  # fmt: skip
        assert len(silent) == SILENT
        wait_for(lambda: log_line(grid.log("sim"), "chaos over"), CHAOS_FOR + 30, what="chaos")
        assert_invariants(grid, timeout=45, violations=sim_violations(host_url))
    assert capacity.samples > 10
    assert max(capacity.most.values()) >= NODES // AGENTS, "the watch reads the indexes"
    assert not capacity.exceeded, capacity.exceeded[:10]

    # health: the silent agents, and only they, were marked offline, within the timeout
    offline_after = float(FAST_TIMINGS["GRID_OFFLINE_AFTER"])
    health = float(FAST_TIMINGS["GRID_HEALTH_INTERVAL"])
    offline = grid.find_events(EventType.AGENT_OFFLINE, since=mark)
    assert sorted(e.agent_id for e in offline) == sorted(silent)
    for event in offline:
        assert event.data["silence_s"] <= offline_after + 2 * health + 1, event
    unwell = grid.find_events(EventType.AGENT_DEGRADED, EventType.AGENT_OFFLINE)
    falsely = sorted({e.agent_id for e in unwell} - set(silent))
    assert not falsely, f"live agents marked degraded or offline: {falsely}"
    status = {a.agent_id: a.status for a in grid.state.agents()}
    assert all(status[a] == AgentStatus.OFFLINE for a in silent), status
    live = [a for a, s in status.items() if a not in silent]
    assert len(live) == AGENTS - SILENT
    assert all(status[a] == AgentStatus.ONLINE for a in live)

    # the chaos happened: crashes restarted by supervision, agents left and joined
    restarted = grid.find_events(EventType.NODE_RESTARTED, since=mark)
    assert len(restarted) >= 10, len(restarted)
    joined = [a for a in status if int(a.rsplit("-", 1)[1]) > AGENTS]
    assert len(joined) >= 3, joined
    lost = grid.find_events(EventType.NODE_LOST, since=mark)
    assert {e.agent_id for e in lost} == set(silent), "every silent agent held nodes"

    # a clean stop: every simulated agent unregisters, the process exits 0
    assert grid.stop("sim", timeout=60) == 0, grid.log("sim")[-2000:]
    assert grid.state.agents() == []
