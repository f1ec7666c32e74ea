"""The state store on a real Redis Cluster (three primaries, slots spread over them).

Every script GridState runs touches keys of one agent's hash tag, so it runs in one slot;
global keys are written beside it in non-transactional pipelines, which the cluster client
splits by node. A CROSSSLOT error anywhere would fail these tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from grid.core import naming
from grid.core.connection import broker_url
from grid.core.errors import ConfigError
from grid.core.redis_server import EmbeddedRedis
from grid.core.rtypes import Redis
from grid.core.settings import Settings
from grid.core.state import AgentRecord, GridState, NodeRecord, NodeStatus
from grid.workers.master.view import FleetView
from tests.gridproc import LocalGrid
from tests.helpers import wait_for
from tests.redis_cluster import RedisCluster, running_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture
def state(cluster: RedisCluster) -> Iterator[GridState]:
    client = cluster.client()
    client.flushall(target_nodes=client.PRIMARIES)
    yield GridState(cast(Redis, client))
    client.close()


def test_agents_spread_over_every_primary(cluster: RedisCluster) -> None:
    client = cluster.client()
    slots = {client.keyslot(naming.agent_key(f"agent-{i}")) for i in range(30)}
    nodes = [client.get_node_from_key(naming.agent_key(f"agent-{i}")) for i in range(30)]
    owners = {node.port for node in nodes if node is not None}
    assert len(slots) == 30 and owners == set(cluster.ports)


def test_every_state_operation_runs_on_a_cluster(state: GridState) -> None:
    agents = [f"agent-{i}" for i in range(6)]
    for agent_id in agents:
        state.register_agent(AgentRecord(agent_id=agent_id))
        state.claim_agent_id(agent_id, f"token-{agent_id}", ttl=5)
    records = [
        NodeRecord(node_id=f"n{i}", agent_id=agents[i % 6], generation=i, created_at=1.0)
        for i in range(30)
    ]
    state.create_nodes(records)
    view = FleetView(state)
    view.refresh()
    assert sorted(view.nodes) == sorted(r.node_id for r in records)

    reply = state.heartbeat("agent-1", "token-agent-1", ttl=5, now=50.0, node_count=5)
    assert reply.outcome == "ok" and set(reply.placements) == {"n1", "n7", "n13", "n19", "n25"}
    assert state.heartbeat_times(before=10.0) == {a: 0.0 for a in agents if a != "agent-1"}

    assert state.update_node("agent-1", "n1", status=NodeStatus.RUNNING, port=4000)
    state.set_node_status("agent-2", ["n2", "n8"], NodeStatus.STOPPING)
    state.delete_node("agent-3", "n3")
    state.update_agent("agent-4", status="offline")
    assert state.unwell_agents() == {"agent-4"}
    assert view.refresh()
    assert view.nodes["n1"].status == NodeStatus.RUNNING and "n3" not in view.nodes
    assert view.node_list() == state.nodes()
    assert state.check_index() == []
    assert state.acquire_lease(naming.leader_key(), "m1", ttl=5)
    assert not state.acquire_lease(naming.leader_key(), "m2", ttl=5)


def test_no_script_touches_two_slots(state: GridState) -> None:
    """Belt and braces: a cross-slot script would fail on a cluster; prove the tag holds."""
    client = cast(Any, state.r)
    keys = [
        naming.agent_key("a"),
        naming.agent_lock_key("a"),
        naming.agent_nodes_key("a"),
        naming.node_key("a", "n"),
    ]
    assert len({client.keyslot(k) for k in keys}) == 1


def test_a_grid_runs_with_its_state_and_events_on_a_cluster(
    cluster: RedisCluster, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """A real master and agents: state and events on the cluster, Celery on a plain Redis."""
    client = cluster.client()
    client.flushall(target_nodes=client.PRIMARIES)
    cluster_url = f"redis+cluster://127.0.0.1:{cluster.ports[0]}/0"
    env = {
        "GRID_BROKER_URL": redis_server.url,
        "GRID_STATE_URL": cluster_url,
        "GRID_EVENTS_URL": cluster_url,
        "GRID_METRICS_INTERVAL": "0.5",  # node samples and roll-ups go to the cluster too
    }
    grid = LocalGrid(cluster_url, tmp_path / "home", env=env)
    try:
        grid.start_master()
        for agent_id in ("agent-1", "agent-2"):
            grid.start_agent(agent_id, 3)
        grid.wait_leader()
        grid.wait_agents("agent-1", "agent-2")
        assert grid.cli("scale", "--nodes", "4", timeout=40).returncode == 0
        running = grid.wait_pool(4)
        assert {n.agent_id for n in running} == {"agent-1", "agent-2"}
        assert grid.state.check_index() == []
        shown = grid.cli("events", "--type", "scale_requested", "--json")
        assert shown.returncode == 0, shown.stderr
        assert [e["data"]["desired"] for e in json.loads(shown.stdout)] == [4]
        status = json.loads(grid.cli("status", "--json").stdout)
        assert status["nodes"]["running"] == 4

        def sampled() -> bool:
            return any(True for _ in client.scan_iter(match=f"{naming.PREFIX}:m:node:*"))

        wait_for(sampled, 20, what="node samples written to the cluster")
        assert grid.cli("scale", "--nodes", "0").returncode == 0
        grid.wait_pool(0)
    finally:
        leaked = grid.close()
        client.close()
    assert not leaked, f"node processes left behind: {leaked}"


def test_the_broker_refuses_a_cluster_url(tmp_path: Path) -> None:
    settings = Settings(redis_url="redis+cluster://127.0.0.1:7000/0", home=tmp_path)
    with pytest.raises(ConfigError, match="kombu has no Cluster transport"):
        broker_url(settings)
