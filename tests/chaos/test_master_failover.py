"""The leading master killed with kill -9 in the middle of a scale-up."""

from __future__ import annotations

import time

from tests.chaos.conftest import GridFactory
from tests.chaos.harness import assert_invariants
from tests.helpers import wait_for

LEASE = 3.0  # GRID_LEASE_TTL of the test timings


def test_leader_killed_during_scale_the_standby_finishes_it(chaos: GridFactory) -> None:
    grid = chaos()
    # agent-2 joins only after the kill: the second half of the scale needs the new leader
    grid.up(agents=("agent-1",), masters=("master-a", "master-b"), max_nodes=10)
    leader = wait_for(grid.leader_id, 10, what="a leader") or ""
    standby = "master-b" if leader == "master-a" else "master-a"
    mark = grid.mark()

    grid.scale(20)
    grid.wait_event("spawn_requested", since=mark, count=10)
    killed_at = time.time()
    grid.kill(leader)
    grid.start_agent("agent-2", 10)

    elected = grid.wait_event("leader_elected", since=mark, timeout=LEASE + 10)[0]
    took_over = elected.ts - killed_at
    assert elected.data["master_id"] == standby
    assert took_over <= LEASE + 1.0, f"standby took over after {took_over:.2f}s"
    grid.wait_agents("agent-2")
    nodes = grid.wait_settled(timeout=90)
    done = time.time() - killed_at
    print(
        f"\nleader kill -> new leader {took_over:.2f}s, 20 nodes running {done:.2f}s after the kill"
    )
    per_agent = {a: sum(1 for n in nodes if n.agent_id == a) for a in ("agent-1", "agent-2")}
    assert per_agent == {"agent-1": 10, "agent-2": 10}, per_agent
    # the standby placed agent-2's half: it leads and acts
    late = grid.find_events("spawn_requested", since=elected.id)
    assert sum(1 for e in late if e.agent_id == "agent-2") == 10
    assert grid.leader_id() == standby
    assert_invariants(grid)
