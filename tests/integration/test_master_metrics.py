"""The master's /metrics page on a real Redis, read back with prometheus_client's parser."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from grid.core.connection import redis_client
from grid.core.events import EventLog
from grid.core.state import AgentRecord, AgentStatus, GridState, NodeRecord, NodeStatus
from grid.workers.master.pages import WebServer

Labels = tuple[tuple[str, str], ...]


@pytest.fixture
def state(redis_url: str) -> Iterator[GridState]:
    client = redis_client(redis_url)
    yield GridState(client)
    client.close()


@pytest.fixture
def pages(state: GridState) -> Iterator[WebServer]:
    server = WebServer(state, EventLog(state.r), "127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


def scrape(server: WebServer) -> dict[str, tuple[str, str, dict[Labels, float]]]:
    """GET /metrics → {family: (type, help, {sorted labels: value})}, by the official parser."""
    host, port = server.httpd.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200, body
        assert resp.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    finally:
        conn.close()
    families: dict[str, tuple[str, str, dict[Labels, float]]] = {}
    for family in text_string_to_metric_families(body):
        assert family.name not in families, f"family {family.name} written twice"
        samples: dict[Labels, float] = {}
        for sample in family.samples:
            assert sample.name == family.name
            samples[tuple(sorted(sample.labels.items()))] = sample.value
        families[family.name] = (family.type, family.documentation, samples)
    return families


def node(node_id: str, pool: str, status: NodeStatus, agent_id: str = "a1") -> NodeRecord:
    return NodeRecord(node_id=node_id, pool=pool, agent_id=agent_id, status=status)


def test_metrics_page_parses_back_to_the_grid_state(state: GridState, pages: WebServer) -> None:
    now = time.time()
    state.register_agent(AgentRecord(agent_id="a1", last_heartbeat=now))
    state.register_agent(AgentRecord(agent_id="a2", status=AgentStatus.OFFLINE, last_heartbeat=now))
    state.create_nodes(
        [
            node("web-1", "web", NodeStatus.RUNNING),
            node("web-2", "web", NodeStatus.RUNNING),
            node("web-3", "web", NodeStatus.FAILED, agent_id="a2"),
            node("batch-1", "batch", NodeStatus.RUNNING),
            node("spare-1", "spare", NodeStatus.PENDING),  # a pool with no desired size
        ]
    )
    state.set_desired("web", 3)
    state.set_desired("batch", 1)
    state.set_pool_status("web", {"shortfall": 1})

    families = scrape(pages)

    assert set(families) == {
        "grid_agents",
        "grid_nodes",
        "grid_pool_desired",
        "grid_pool_shortfall",
        "grid_cluster_state",
    }
    assert {kind for kind, _, _ in families.values()} == {"gauge"}
    assert families["grid_agents"][1] == "Agents by status."
    assert families["grid_agents"][2] == {
        (("status", "online"),): 1,
        (("status", "degraded"),): 0,
        (("status", "offline"),): 1,
    }
    assert families["grid_nodes"][2] == {
        (("pool", "batch"), ("status", "running")): 1,
        (("pool", "spare"), ("status", "pending")): 1,
        (("pool", "web"), ("status", "failed")): 1,
        (("pool", "web"), ("status", "running")): 2,
    }
    assert families["grid_pool_desired"][2] == {(("pool", "web"),): 3, (("pool", "batch"),): 1}
    assert families["grid_pool_shortfall"][2] == {
        (("pool", "web"),): 1,
        (("pool", "batch"),): 0,
        (("pool", "spare"),): 0,
    }
    # An agent offline, every pool at least half its size: degraded.
    assert families["grid_cluster_state"][2] == {(): 1}

    # Read from Redis at each scrape, not when the page started.
    state.set_desired("web", 8)
    again = scrape(pages)
    assert again["grid_pool_desired"][2][(("pool", "web"),)] == 8
    assert again["grid_cluster_state"][2] == {(): 2}  # web: 2 of 8, below half


def test_metrics_page_of_an_empty_grid(pages: WebServer) -> None:
    families = scrape(pages)
    assert families["grid_agents"][2] == {(("status", s.value),): 0 for s in AgentStatus}
    assert families["grid_nodes"][2] == {}
    assert families["grid_pool_desired"][2] == {}
    assert families["grid_cluster_state"][2] == {(): 0}
