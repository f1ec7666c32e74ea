"""Three Redis roles on three servers: every process and command uses each for its role only.

GRID_REDIS_URL points at a port where nothing listens, so a role that fell back to it
instead of its own setting would fail the grid."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from grid.core import naming
from grid.core.ports import free_port
from grid.core.redis_server import EmbeddedRedis
from tests.gridproc import LocalGrid
from tests.helpers import wait_for

ROLES = ("broker", "state", "events")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, EmbeddedRedis]]:
    started = {role: EmbeddedRedis(data_dir=tmp_path / role, appendonly=False) for role in ROLES}
    try:
        for server in started.values():
            server.start()
        yield started
    finally:
        for server in started.values():
            server.stop()


def _keys(server: EmbeddedRedis) -> set[str]:
    with redis.Redis.from_url(server.url, decode_responses=True) as client:
        return set(client.keys("*"))


def test_each_role_on_its_own_redis(servers: dict[str, EmbeddedRedis], tmp_path: Path) -> None:
    env = {
        "GRID_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        "GRID_BROKER_URL": servers["broker"].url,
        "GRID_STATE_URL": servers["state"].url,
        "GRID_EVENTS_URL": servers["events"].url,
        "GRID_METRICS_INTERVAL": "0.2",
    }
    grid = LocalGrid(servers["state"].url, tmp_path / "home", env=env)
    try:
        grid.start_master()
        grid.start_agent("agent-1")
        grid.wait_leader()
        grid.wait_agents("agent-1")
        scaled = grid.cli("scale", "--nodes", "2")
        assert scaled.returncode == 0, scaled.stderr
        grid.wait_pool(2)

        def sampled() -> bool:
            return any(k.startswith("grid:m:node:") for k in _keys(servers["events"]))

        wait_for(sampled, 15, what="node metrics in the events Redis")
        state, events, broker = (_keys(servers[r]) for r in ("state", "events", "broker"))
        on_state = {naming.pools_key(), naming.node_agents_key(), naming.agents_key()}
        on_state |= {naming.leader_key(), naming.agent_key("agent-1")}
        assert on_state <= state
        events_tag = f"{naming.PREFIX}:{naming.EVENTS_TAG}"  # every event key starts so
        assert not {k for k in state if k.startswith(("grid:m:", events_tag, "_kombu"))}
        assert naming.events_key() in events
        agent_tag = naming.agent_tag("agent-1")
        assert not {k for k in events if k.startswith((agent_tag, naming.agents_key(), "_kombu"))}
        assert any(k.startswith("_kombu.binding.") for k in broker)
        assert not {k for k in broker if k.startswith("grid:")}

        # the CLI reads each role from its own Redis too
        shown = grid.cli("events", "--type", "scale_requested", "--json")
        assert shown.returncode == 0, shown.stderr
        assert [e["data"]["desired"] for e in json.loads(shown.stdout)] == [2]
        metrics = grid.cli("metrics", "--pool", "default", "--json")
        assert metrics.returncode == 0, metrics.stderr
        assert json.loads(metrics.stdout)["default"], metrics.stdout
    finally:
        leaked = grid.close()
    assert not leaked, f"node processes left behind: {leaked}"
