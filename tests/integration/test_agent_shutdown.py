"""An agent stopped while Redis is gone still stops its nodes (Redis is best effort)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from grid.core.redis_server import EmbeddedRedis
from tests.gridproc import LocalGrid, home_processes


@pytest.fixture
def own_grid(tmp_path: Path) -> Iterator[tuple[LocalGrid, EmbeddedRedis]]:
    """A grid on a Redis of its own, which the test may kill."""
    server = EmbeddedRedis(data_dir=tmp_path / "redis")
    server.start()
    grid = LocalGrid(server.url, tmp_path / "home")
    try:
        yield grid, server
    finally:
        leaked = grid.close()
        server.stop()
        assert not leaked, f"node processes left behind: {leaked}"
        assert not home_processes(grid.home)


def test_agent_stops_its_nodes_when_redis_is_gone(
    own_grid: tuple[LocalGrid, EmbeddedRedis],
) -> None:
    grid, server = own_grid
    grid.start_master()
    grid.start_agent("agent-1")
    grid.wait_leader()
    grid.wait_agents("agent-1")
    assert grid.cli("scale", "--nodes", "2").returncode == 0
    nodes = grid.wait_pool(2)
    assert sorted(p.pid for p in grid.node_processes()) == sorted(n.pid or 0 for n in nodes)

    server.kill()
    code = grid.stop("agent-1", timeout=60)

    assert code == 0, grid.log("agent-1")
    assert list(grid.node_processes()) == []
    log = grid.log("agent-1")
    assert log.count("node stopped, its record not updated") == 2
    assert log.rstrip().endswith("agent agent-1 stopped")
