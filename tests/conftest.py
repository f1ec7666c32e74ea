"""Fixtures shared by every tier. Tests are marked by their folder (unit/integration/e2e/chaos)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from grid.core.redis_server import EmbeddedRedis
from tests.gridproc import LocalGrid
from tests.helpers import require
from tests.sentinel import SentinelSet, available

TIERS = ("unit", "integration", "e2e", "chaos")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real redis-server for the session (append-only on, like `grid up`)."""
    server = EmbeddedRedis(data_dir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """The session server, flushed before each test so tests never see each other's state."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture(scope="session")
def grid_node_command() -> list[str]:
    """argv prefix that starts the grid-node server from this environment."""
    exe = shutil.which("grid-node", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "grid.node.server"]


@pytest.fixture
def local_grid(redis_url: str, tmp_path: Path) -> Iterator[LocalGrid]:
    """A real grid on the session Redis; fails the test if any node process is left behind."""
    grid = LocalGrid(redis_url, tmp_path / "home")
    yield grid
    leaked = grid.close()
    assert not leaked, f"node processes left behind: {leaked}"


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    """A Sentinel-managed Redis (primary, 2 replicas, 3 sentinels) for this test only."""
    require(available(), "redis-server and redis-sentinel from Debian (scripts/services-up.sh)")
    sentinels = SentinelSet(tmp_path / "sentinel")
    try:
        sentinels.start()
        yield sentinels
    finally:
        sentinels.stop()
