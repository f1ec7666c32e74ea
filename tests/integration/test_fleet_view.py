"""The leader's in-memory view (grid.workers.master.view) follows Redis through the change
stream, and falls back to a full read when the stream has dropped what it had not seen.

Real Redis; every write goes through GridState as the agents' and master's writes do.
"""

from __future__ import annotations

import redis

from grid.core import naming
from grid.core.connection import redis_client
from grid.core.state import (
    AgentRecord,
    AgentStatus,
    GridState,
    NodeCensus,
    NodeRecord,
    NodeStatus,
)
from grid.workers.master.view import FleetView


def node(node_id: str, agent_id: str) -> NodeRecord:
    return NodeRecord(node_id=node_id, agent_id=agent_id, generation=1, created_at=1.0)


def status_of(view: FleetView, node_id: str) -> NodeStatus:
    return view.nodes[node_id].status


def matches_redis(view: FleetView, state: GridState) -> bool:
    """Records and the census kept beside them, against a fresh read of Redis."""
    nodes = state.nodes()
    return (
        view.node_list() == nodes
        and view.agent_list() == state.agents()
        and view.census == NodeCensus.of(nodes)
    )


def test_the_view_applies_only_what_changed(redis_url: str) -> None:
    state = GridState(redis_client(redis_url))
    state.register_agent(AgentRecord(agent_id="a1"))
    state.create_nodes([node("n1", "a1"), node("n2", "a1")])
    view = FleetView(state, resync_interval=3600)
    assert view.refresh() and matches_redis(view, state)
    version = view.version

    assert not view.refresh(), "nothing changed, nothing applied"
    assert view.version == version

    state.update_node("a1", "n1", status=NodeStatus.RUNNING)
    state.delete_node("a1", "n2")
    state.register_agent(AgentRecord(agent_id="a2"))
    state.create_nodes([node("n3", "a2")])
    state.update_agent("a1", status=AgentStatus.DEGRADED)
    assert view.refresh() and view.version > version
    assert matches_redis(view, state)
    assert view.nodes["n1"].status == NodeStatus.RUNNING and "n2" not in view.nodes
    assert view.agents["a1"].status == AgentStatus.DEGRADED

    state.update_node("a1", "n1", status=NodeStatus.LOST)  # lost: counted by pool, not agent
    assert view.refresh() and matches_redis(view, state)
    assert view.census.by_agent.get("a1", 0) == 0
    assert view.census.by_pool_status[(naming.DEFAULT_POOL, NodeStatus.LOST.value)] == 1

    state.unregister_agent("a2", "no-token")
    state.delete_node("a2", "n3")
    assert view.refresh() and matches_redis(view, state) and "a2" not in view.agents


def test_a_trimmed_stream_forces_a_full_read(redis_url: str) -> None:
    state = GridState(redis_client(redis_url))
    state.create_nodes([node("n1", "a1")])
    view = FleetView(state, resync_interval=3600)
    view.refresh()
    state.create_nodes([node("n2", "a1")])
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.xtrim(naming.changes_key(), maxlen=0)  # the view's cursor entry is gone
    state.create_nodes([node("n3", "a1")])
    assert view.refresh()
    assert sorted(view.nodes) == ["n1", "n2", "n3"], "n2's entry was trimmed: only a resync sees it"


def test_a_periodic_resync_repairs_drift(redis_url: str) -> None:
    """A write that bypassed the change stream is picked up at the next full read."""
    state = GridState(redis_client(redis_url))
    state.create_nodes([node("n1", "a1")])
    view = FleetView(state, resync_interval=10)
    view.refresh(now=0.0)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.hset(naming.node_key("a1", "n1"), "status", "running")  # no change entry
    assert not view.refresh(now=1.0)
    assert status_of(view, "n1") == NodeStatus.PENDING
    assert view.refresh(now=11.0)
    assert status_of(view, "n1") == NodeStatus.RUNNING
