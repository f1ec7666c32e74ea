"""Records left on an agent whose record is gone are collected by the master, so that
`grid scale --wait` ends: a real master on a real Redis."""

from __future__ import annotations

from grid.core.state import NodeRecord, NodeStatus
from tests.gridproc import LocalGrid
from tests.helpers import wait_for


def test_a_stopping_record_of_a_gone_agent_does_not_stall_scale(local_grid: LocalGrid) -> None:
    grid = local_grid
    grid.start_master()
    grid.wait_leader()
    grid.state.set_desired("default", 1)
    grid.state.create_nodes(
        [
            NodeRecord(node_id="ghost-stop", agent_id="ghost", status=NodeStatus.STOPPING),
            NodeRecord(node_id="ghost-run", agent_id="ghost", status=NodeStatus.RUNNING),
        ]
    )
    result = grid.cli("scale", "--nodes", "0", "--timeout", "30s")
    assert result.returncode == 0, result.stderr
    assert grid.state.nodes() == []
    wait_for(lambda: grid.state.check_index() == [], 10, what="a consistent index")
