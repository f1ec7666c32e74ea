"""The state store on a real Redis Cluster (three primaries, slots spread over them).

Every script GridState runs touches keys of one agent's hash tag, so it runs in one slot;
global keys are written beside it in non-transactional pipelines, which the cluster client
splits by node. A CROSSSLOT error anywhere would fail these tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest

from grid.core import naming
from grid.core.rtypes import Redis
from grid.core.state import AgentRecord, GridState, NodeRecord, NodeStatus
from grid.workers.master.view import FleetView
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
