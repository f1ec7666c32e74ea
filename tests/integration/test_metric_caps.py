"""Custom gauges cannot grow Redis without bound: real grid-nodes, the agent's sampler and
the metrics store on a real Redis.

Each node takes at most MAX_GAUGES custom gauges (the node's own cap); the sampler admits at
most `max_custom` custom names per pool, whatever the number of nodes; the metric-name sets
expire and forget names no longer written.
"""

from __future__ import annotations

import http.client
import os
import select
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from grid.autoscaler.metrics import MetricsStore
from grid.core.connection import redis_client
from grid.core.naming import metric_pools_key, pool_metric_names_key
from grid.core.rtypes import Redis
from grid.node.server import READY_FD_ENV
from grid.workers.agent.sampler import BUILTIN, NodeSampler

pytestmark = pytest.mark.timeout(120)

StartNode = Callable[[str], str]


@pytest.fixture
def client(redis_url: str) -> Iterator[Redis]:
    c = redis_client(redis_url)
    yield c
    c.close()


@pytest.fixture
def start_node(grid_node_command: list[str], tmp_path: Path) -> Iterator[StartNode]:
    """start_node(node_id) -> the endpoint of a real grid-node; all stopped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(node_id: str) -> str:
        read_fd, write_fd = os.pipe()
        argv = ["--port", "0", "--data-dir", str(tmp_path / node_id), "--node-id", node_id]
        procs.append(
            subprocess.Popen(
                [*grid_node_command, *argv],
                env={**os.environ, READY_FD_ENV: str(write_fd)},
                pass_fds=(write_fd,),
                stdout=subprocess.DEVNULL,
            )
        )
        os.close(write_fd)
        try:
            ready, _, _ = select.select([read_fd], [], [], 15)
            port = int(os.read(read_fd, 64)) if ready else pytest.fail("grid-node did not start")
        finally:
            os.close(read_fd)
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def put_gauges(endpoint: str, names: list[str]) -> list[int]:
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    codes = []
    try:
        for name in names:
            conn.request("PUT", f"/gauges/{name}", body=b"1")
            resp = conn.getresponse()
            resp.read()
            codes.append(resp.status)
    finally:
        conn.close()
    return codes


def test_custom_metrics_per_pool_are_capped(client: Redis, start_node: StartNode) -> None:
    nodes = [(f"n{i}", "web", start_node(f"n{i}")) for i in range(3)]
    for node_id, _, endpoint in nodes:
        codes = put_gauges(endpoint, [f"{node_id}_g{j}" for j in range(150)])
        assert codes.count(204) == 100 and codes.count(409) == 50  # the node's own cap
    sampler = NodeSampler(MetricsStore(client), lambda: nodes, "agent-1", 5.0, max_custom=40)
    before = client.dbsize()
    for _ in range(2):  # the second scrape adds the rates (cpu_percent, ...)
        assert sampler.sample_once() == 3
    names = set(MetricsStore(client).metric_names("web"))
    custom = names - BUILTIN
    assert len(custom) == 40, sorted(custom)
    assert {"keys", "bytes", "cpu_percent", "request_rate"} <= names  # Grid's own always pass
    # keys: 3 node sample sets plus a few per admitted name, not per gauge the nodes hold
    assert client.dbsize() - before <= 3 + 2 * len(names) + 2


def test_metric_name_sets_expire_and_forget(client: Redis) -> None:
    store = MetricsStore(client, retention=60, history_retention=600)
    t0 = 1_700_000_000.0
    sample = {"node_id": "n1", "pool": "web", "ts": t0, "metrics": {"old": 1.0}}
    store.write_samples([sample])
    store.write_samples([{**sample, "ts": t0 + 120, "metrics": {"new": 1.0}}])
    assert store.metric_names("web") == ["new"]  # unwritten for longer than the retention
    assert 0 < client.pttl(pool_metric_names_key("web")) <= 60_000
    assert 0 < client.pttl(metric_pools_key()) <= 600_000
