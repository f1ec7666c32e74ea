"""The per-agent node index and the node catalogue stay in step with the node records.

Real Redis. Every write goes through GridState's Lua scripts (record and index entry in one
script, in the agent's hash tag); `check_index` compares everything and must find nothing.
The chaos suite runs the same check after drains, fencing, agent loss and Redis restarts.
"""

from __future__ import annotations

import redis

from grid.core import naming
from grid.core.connection import redis_client
from grid.core.state import AgentRecord, GridState, NodeRecord, NodeStatus


def fresh_state(url: str) -> GridState:
    return GridState(redis_client(url))


def node(node_id: str, agent_id: str, generation: int) -> NodeRecord:
    return NodeRecord(node_id=node_id, agent_id=agent_id, generation=generation, created_at=1.0)


def test_create_update_delete_keep_the_index_in_step(redis_url: str) -> None:
    state = fresh_state(redis_url)
    for agent_id in ("a1", "a2"):
        state.register_agent(AgentRecord(agent_id=agent_id))
    state.create_nodes([node("n1", "a1", 1), node("n2", "a1", 2), node("n3", "a2", 3)])
    assert state.check_index() == []
    assert state.agent_placements("a1") == {"n1": ("1", "pending"), "n2": ("2", "pending")}

    assert state.update_node("a1", "n1", status=NodeStatus.RUNNING, port=4000)
    state.set_node_status("a2", ["n3"], NodeStatus.STOPPING)
    assert state.agent_placements("a1")["n1"] == ("1", "running")
    assert state.agent_placements("a2")["n3"] == ("3", "stopping")
    assert state.check_index() == []

    state.delete_node("a1", "n2")
    assert state.node("n2") is None and "n2" not in state.agent_placements("a1")
    assert not state.update_node("a1", "n2", status=NodeStatus.RUNNING), "resurrected"
    assert "n2" not in state.agent_placements("a1")
    assert [n.node_id for n in state.nodes()] == ["n1", "n3"]
    assert [n.node_id for n in state.nodes(agent_id="a2")] == ["n3"]
    assert state.check_index() == []


def test_a_node_replaced_on_another_agent_is_indexed_only_there(redis_url: str) -> None:
    """Reassignment is delete + create under a new generation: the old agent's index loses it."""
    state = fresh_state(redis_url)
    state.create_nodes([node("n1", "a1", 1)])
    pipe = state.pipeline()
    state.delete_node("a1", "n1", pipe=pipe)
    state.create_nodes([node("n1", "a2", 2)], pipe=pipe)
    pipe.execute()
    assert state.agent_placements("a1") == {}
    assert state.agent_placements("a2") == {"n1": ("2", "pending")}
    rec = state.node("n1")
    assert rec is not None and rec.agent_id == "a2"
    assert state.check_index() == []


def test_check_index_reports_every_kind_of_drift(redis_url: str) -> None:
    state = fresh_state(redis_url)
    state.create_nodes([node("n1", "a1", 1), node("n2", "a1", 2), node("n3", "a1", 3)])
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.hset(naming.agent_nodes_key("a1"), "n1", "9:running")  # stale entry
    client.hdel(naming.node_agents_key(), "n2")  # catalogue lost it
    client.hset(naming.agent_nodes_key("a1"), "ghost", "4:pending")  # entry with no record
    problems = state.check_index()
    assert any(p.startswith("node n1: index") for p in problems)
    assert any(p.startswith("node n2: catalogue") for p in problems)
    assert any(p.startswith("node ghost: indexed on a1") for p in problems)
    assert len(problems) == 3


def test_the_index_survives_a_redis_restart(redis_url: str) -> None:
    """Records and indexes persist together (DEBUG RELOAD saves and reloads the dataset; the
    chaos suite restarts a real Redis and runs check_index after)."""
    state = fresh_state(redis_url)
    state.create_nodes([node(f"n{i}", f"a{i % 3}", i) for i in range(30)])
    state.set_node_status("a1", ["n1", "n4"], NodeStatus.RUNNING)
    before = {a: state.agent_placements(a) for a in ("a0", "a1", "a2")}
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.execute_command("DEBUG", "RELOAD")
    assert {a: state.agent_placements(a) for a in ("a0", "a1", "a2")} == before
    assert state.check_index() == []


def test_a_heartbeat_reads_only_its_own_agent(redis_url: str) -> None:
    state = fresh_state(redis_url)
    state.register_agent(AgentRecord(agent_id="a1"))
    state.create_nodes([node("mine", "a1", 1)] + [node(f"x{i}", "a2", i) for i in range(50)])
    state.claim_agent_id("a1", "token", ttl=5)
    reply = state.heartbeat("a1", "token", ttl=5, now=123.0, node_count=1)
    assert reply.outcome == "ok" and reply.placements == {"mine": ("1", "pending")}
    assert state.heartbeat_times(ids=["a1"]) == {"a1": 123.0}
    rec = state.agent("a1")
    assert rec is not None and rec.last_heartbeat == 123.0 and rec.node_count == 1
    assert state.heartbeat("a1", "someone-else", ttl=5, now=124.0).outcome == "taken"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.delete(naming.agent_key("a1"))
    assert state.heartbeat("a1", "token", ttl=5, now=125.0).outcome == "missing"


def commandstats(client: redis.Redis[str]) -> dict[str, int]:
    info = client.info("commandstats")
    return {name: int(stats["calls"]) for name, stats in info.items()}


def test_a_heartbeat_costs_the_same_whatever_the_size_of_the_grid(redis_url: str) -> None:
    """Same Redis commands, same reply, with 10 or 5,000 other nodes in the grid."""
    state = fresh_state(redis_url)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    state.register_agent(AgentRecord(agent_id="a1"))
    state.claim_agent_id("a1", "token", ttl=5)
    state.create_nodes([node("mine", "a1", 1)])
    costs = []
    for others in (10, 5_000):
        state.create_nodes([node(f"x{others}-{i}", f"o{i % 50}", i) for i in range(others)])
        before = commandstats(client)
        reply = state.heartbeat("a1", "token", ttl=5, now=1.0, node_count=1)
        after = commandstats(client)
        assert reply.placements == {"mine": ("1", "pending")}
        delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        delta.pop("cmdstat_info", None)
        costs.append(delta)
    assert costs[0] == costs[1]
    # one EVAL (claim, record, own index inside it) and the heartbeat time; no SCRIPT EXISTS
    assert sorted(costs[0]) == sorted(
        f"cmdstat_{c}" for c in ("eval", "get", "pexpire", "exists", "hset", "hgetall", "zadd")
    )
