"""Scaling a real grid: master and two agents as processes, real grid-node servers."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import psutil

from grid.core.state import NodeRecord
from tests.gridproc import LocalGrid


def kv_roundtrip(node: NodeRecord, key: str, value: bytes) -> bytes:
    parts = urlsplit(node.endpoint)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
    try:
        conn.request("PUT", f"/kv/{key}", body=value)
        assert conn.getresponse().read() is not None
        conn.request("GET", f"/kv/{key}")
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read()
    finally:
        conn.close()


def test_scale_up_down_to_zero(local_grid: LocalGrid) -> None:
    local_grid.start_master()
    local_grid.start_agent("agent-1")
    local_grid.start_agent("agent-2")
    local_grid.wait_leader()
    local_grid.wait_agents("agent-1", "agent-2")

    for size in (5, 2, 0):
        result = local_grid.cli("scale", "--nodes", str(size))
        assert result.returncode == 0, result.stderr
        nodes = local_grid.wait_pool(size)
        assert len({n.node_id for n in nodes}) == size
        for node in nodes:
            assert psutil.pid_exists(node.pid or -1)
            value = f"value of {node.node_id}".encode() + b"\x00\xff"
            assert kv_roundtrip(node, "k1", value) == value
        if size == 5:
            per_agent = {
                a: sum(1 for n in nodes if n.agent_id == a) for a in ("agent-1", "agent-2")
            }
            assert sorted(per_agent.values()) == [2, 3], per_agent  # spread by free capacity
            first_five = {n.node_id: n for n in nodes}
        if size == 2:
            # scale-down stops the newest nodes first: the survivors are the two oldest
            oldest = sorted(first_five.values(), key=lambda n: (n.created_at, n.node_id))
            assert {n.node_id for n in nodes} <= {n.node_id for n in oldest}
    assert list(local_grid.node_processes()) == []
