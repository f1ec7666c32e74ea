"""grid.core.naming: the one place that builds queue names, Redis keys and labels."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from grid.core import naming

# (function, args, expected)
NAMES: list[tuple[Callable[..., str], tuple[Any, ...], str]] = [
    (naming.agent_queue, ("agent-1",), "grid.agent.agent-1"),
    (naming.master_private_queue, ("m1",), "grid.master.m1"),
    (naming.agent_worker_name, ("agent-1", "host"), "agent.agent-1@host"),
    (naming.master_worker_name, ("m1", "host"), "master.m1@host"),
    (naming.agents_key, (), "grid:agents"),
    (naming.agent_key, ("agent-1",), "grid:{agent-1}:agent"),
    (naming.agent_lock_key, ("agent-1",), "grid:{agent-1}:lock"),
    (naming.agent_nodes_key, ("agent-1",), "grid:{agent-1}:nodes"),
    (naming.node_key, ("agent-1", "default-0a1b2c3d"), "grid:{agent-1}:node:default-0a1b2c3d"),
    (naming.heartbeats_key, (), "grid:heartbeats"),
    (naming.unwell_agents_key, (), "grid:unwell-agents"),
    (naming.node_agents_key, (), "grid:node-agents"),
    (naming.changes_key, (), "grid:changes"),
    (naming.pools_key, (), "grid:pools"),
    (naming.pool_status_key, (), "grid:pool-status"),
    (naming.events_key, (), "grid:{events}:stream"),
    (naming.events_index_key, ("agent", "agent-1"), "grid:{events}:ix:agent:agent-1"),
    (naming.events_live_channel, (), "grid:events:live"),
    (naming.leader_key, (), "grid:leader"),
    (naming.leader_info_key, (), "grid:leader-info"),
    (naming.cluster_state_key, (), "grid:cluster-state"),
    (naming.generation_key, (), "grid:generation"),
    (naming.policies_key, (), "grid:policies"),
    (naming.policy_state_key, ("web",), "grid:policy-state:web"),
    (naming.decisions_key, ("web",), "grid:decisions:web"),
    (naming.pool_metrics_key, ("web", "cpu"), "grid:m:pool:web:cpu"),
    (naming.pool_metric_names_key, ("web",), "grid:m:names:web"),
    (naming.node_samples_key, ("n1",), "grid:m:node:n1"),
    (naming.pool_history_key, ("web", "cpu"), "grid:m:hist:web:cpu"),
    (naming.pool_minute_key, ("web", "cpu", 29_000_000), "grid:m:hist:web:cpu:29000000"),
    (naming.metric_pools_key, (), "grid:m:pools"),
    (naming.replication_probe_key, (), "grid:{grid:pools}:replication-probe"),
    (naming.restore_key, (), "grid:restore"),
]


def test_agent_locks_and_the_events_role_are_told_by_name() -> None:
    assert naming.is_agent_lock(naming.agent_lock_key("agent-1"))
    for other in (naming.agent_key("agent-1"), "grid:lock", "grid:{a}:lock:x", "x:{a}:lock"):
        assert not naming.is_agent_lock(other), other
    events = [naming.events_key(), naming.events_index_key("type", "t"), naming.metric_pools_key()]
    events += [naming.node_samples_key("n1"), naming.pool_minute_key("web", "cpu", 1)]
    assert all(naming.in_events_role(k) for k in events)
    state = [naming.pools_key(), naming.agent_key("m"), naming.policies_key(), "grid:mx"]
    assert not any(naming.in_events_role(k) for k in state)


@pytest.mark.parametrize(("fn", "args", "expected"), NAMES, ids=[f.__name__ for f, _, _ in NAMES])
def test_name(fn: Callable[..., str], args: tuple[Any, ...], expected: str) -> None:
    assert fn(*args) == expected


def test_every_name_function_is_covered() -> None:
    covered = {fn.__name__ for fn, _, _ in NAMES}
    public = {
        name
        for name, fn in inspect.getmembers(naming, inspect.isfunction)
        if fn.__module__ == naming.__name__ and (name.endswith(("_key", "_queue", "_name")))
    }
    assert public - covered == set(), "add the new naming function to NAMES"


def test_keys_live_under_the_prefix_and_queues_under_grid_dot() -> None:
    for fn, args, _ in NAMES:
        value = fn(*args)
        if fn.__name__.endswith("_key"):
            assert value.startswith(naming.PREFIX + ":")
        elif fn.__name__.endswith("_queue"):
            assert value.startswith(naming.PREFIX + ".")
    assert naming.MASTER_QUEUE == "grid.master"
    assert naming.agent_queue("master") != naming.MASTER_QUEUE


@pytest.mark.parametrize("metric", ["cpu", "names", "rss_bytes", "custom:gauge", "lock"])
def test_keys_never_collide(metric: str) -> None:
    """Distinct things get distinct keys, whatever a metric is called."""
    ids = ["a", "b-1"]
    keys: list[str] = []
    for x in ids:
        keys += [
            naming.agent_key(x),
            naming.agent_lock_key(x),
            naming.agent_nodes_key(x),
            naming.node_key(x, x),
            naming.policy_state_key(x),
            naming.decisions_key(x),
            naming.pool_metrics_key(x, metric),
            naming.pool_metric_names_key(x),
            naming.node_samples_key(x),
            naming.pool_history_key(x, metric),
            naming.pool_minute_key(x, metric, 29_000_000),
        ]
    keys += [fn() for fn, args, _ in NAMES if not args]
    assert len(keys) == len(set(keys))


def test_new_node_id_is_valid_unique_and_in_its_pool() -> None:
    ids = {naming.new_node_id("web") for _ in range(200)}
    assert len(ids) == 200
    for node_id in ids:
        assert node_id.startswith("web-")
        assert naming.valid_id(node_id)


VALID = ["a", "agent-1", "0", "a" * 63, "default-0a1b2c3d", "x-y-z", "1a"]
INVALID = ["", "-a", "a-", "A", "agent_1", "a.b", "a:b", "a b", "a" * 64, "é", "a\n", "nope!"]


@pytest.mark.parametrize("value", VALID)
def test_valid_id(value: str) -> None:
    assert naming.valid_id(value)


@pytest.mark.parametrize("value", INVALID)
def test_invalid_id(value: str) -> None:
    assert not naming.valid_id(value)


def test_node_labels() -> None:
    assert naming.node_labels("n1", "agent-1", "web") == {
        "grid.managed": "true",
        "grid.node_id": "n1",
        "grid.agent_id": "agent-1",
        "grid.pool": "web",
    }


def test_an_agent_and_its_nodes_share_one_cluster_hash_tag() -> None:
    """Every key one Lua script touches is in one Redis Cluster slot: the agent's tag."""
    keys = [
        naming.agent_key("a1"),
        naming.agent_lock_key("a1"),
        naming.agent_nodes_key("a1"),
        naming.node_key("a1", "default-1"),
    ]
    tags = {key[key.index("{") + 1 : key.index("}")] for key in keys}
    assert tags == {"a1"}
    assert all(key.startswith("grid:{a1}:") for key in keys)  # one ACL pattern covers them
