"""Node processes that die: restarted in place, or failed and replaced elsewhere when flapping."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import psutil

from grid.workers.agent.runtime import resolve_node_command
from tests.chaos.conftest import GridFactory
from tests.chaos.harness import assert_invariants
from tests.helpers import wait_for


def test_killed_node_is_noticed_and_restarted(chaos: GridFactory) -> None:
    grid = chaos()
    grid.up()
    grid.scale(4)
    victim = grid.wait_settled()[0]
    mark = grid.mark()

    killed_at = grid.kill_node(victim)
    crashed = grid.wait_event("node_crashed", since=mark, node_id=victim.node_id)[0]
    assert crashed.data["exit_code"] == -9, crashed.data
    assert "SIGKILL" in crashed.data["detail"], crashed.data
    assert crashed.agent_id == victim.agent_id
    assert crashed.ts - killed_at < 0.5, (
        f"crash noticed {crashed.ts - killed_at:.3f}s after the kill"
    )

    restarted = grid.wait_event("node_restarted", since=mark, node_id=victim.node_id)[0]
    assert restarted.data["restart_count"] == 1

    def healthy_again() -> bool:
        rec = grid.state.node(victim.node_id)
        return bool(
            rec and rec.status == "running" and rec.pid != victim.pid and rec.restart_count == 1
        )

    wait_for(healthy_again, 10, what=f"{victim.node_id} running again")
    healed = time.time() - killed_at
    print(
        f"\nnode kill -> restarted and healthy: {restarted.ts - killed_at:.3f}s "
        f"(seen {healed:.3f}s)"
    )

    listed = grid.cli("nodes", "--json")
    assert listed.returncode == 0, listed.stderr
    row = next(n for n in json.loads(listed.stdout) if n["node_id"] == victim.node_id)
    assert row["restart_count"] == 1 and row["agent_id"] == victim.agent_id
    assert psutil.pid_exists(row["pid"])
    # the same node came back: nothing was replaced
    assert not grid.find_events("spawn_requested", since=mark)
    assert_invariants(grid)


FLAPPING_NODE = """#!/bin/sh
# A node that serves for a moment, then dies: grid-node in the background, killed after 1 s.
{node} "$@" &
child=$!
sleep 1
kill -9 $child
exit 3
"""


def test_flapping_node_fails_and_moves_to_the_other_agent(
    chaos: GridFactory, tmp_path: Path
) -> None:
    script = tmp_path / "flapping-grid-node.sh"
    script.write_text(FLAPPING_NODE.format(node=" ".join(resolve_node_command("grid-node"))))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    grid = chaos(env={"GRID_CRASH_LIMIT": "2", "GRID_CRASH_WINDOW": "60"})
    grid.up(agent_env={"agent-1": {"GRID_NODE_COMMAND": str(script)}})
    mark = grid.mark()
    grid.scale(2)

    failed = grid.wait_event("node_failed", since=mark, agent_id="agent-1", timeout=40)[0]
    assert failed.data["crashes"] == 3  # the limit is 2 crashes in the window: the 3rd gives up
    crashes = grid.find_events("node_crashed", since=mark, node_id=failed.node_id)
    assert len(crashes) == 3 and all(c.data["exit_code"] == 3 for c in crashes), crashes
    restarts = grid.find_events("node_restarted", since=mark, node_id=failed.node_id)
    assert len(restarts) == 2

    nodes = grid.wait_settled(timeout=40)
    assert {n.agent_id for n in nodes} == {"agent-2"}, [(n.node_id, n.agent_id) for n in nodes]
    # the failed record was replaced, not restarted again on the flapping agent
    assert grid.state.node(failed.node_id) is None
    later = grid.find_events("spawn_requested", since=failed.id)
    assert later and all(e.agent_id == "agent-2" for e in later), [
        (e.node_id, e.agent_id) for e in later
    ]
    assert_invariants(grid)
