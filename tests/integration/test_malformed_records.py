"""A malformed record in Redis is skipped with a warning, never a failure of a reader.

Someone (a bug, an old version, a hand-edit) leaves `HSET grid:node:bogus port abc`: before,
`grid nodes` died with a traceback, `/api/nodes` answered 503 and the master's health tick
crashed every pass. Real Redis, real master and agent processes, real grid-node servers.
"""

from __future__ import annotations

import json
import urllib.request

from grid.core import naming
from grid.core.state import AgentStatus
from tests.gridproc import LocalGrid, wait_gone
from tests.helpers import wait_for


def plant_bad_records(grid: LocalGrid) -> None:
    bogus = naming.node_key("agent-1", "bogus")
    grid.client.hset(bogus, mapping={"node_id": "bogus", "agent_id": "agent-1", "port": "abc"})
    grid.client.hset(naming.agent_nodes_key("agent-1"), "bogus", "0:running:default")
    grid.client.hset(naming.node_agents_key(), "bogus", "agent-1")
    grid.client.hset(naming.agent_key("rogue"), mapping={"agent_id": "rogue", "max_nodes": "x"})
    grid.client.sadd(naming.agents_key(), "rogue")


def test_readers_skip_a_malformed_record(local_grid: LocalGrid) -> None:
    local_grid.start_master()
    local_grid.start_agent("agent-1", 3)
    local_grid.wait_leader()
    local_grid.wait_agents("agent-1")
    assert local_grid.cli("scale", "--nodes", "2").returncode == 0
    good = {n.node_id for n in local_grid.wait_pool(2)}

    plant_bad_records(local_grid)

    # the CLI: the good nodes listed, the bad one left out with a warning naming its key
    listed = local_grid.cli("nodes", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {n["node_id"] for n in json.loads(listed.stdout)} == good
    assert "Traceback" not in listed.stderr
    assert naming.node_key("agent-1", "bogus") in listed.stderr
    agents = local_grid.cli("agents", "--json")
    assert agents.returncode == 0, agents.stderr
    assert [a["agent_id"] for a in json.loads(agents.stdout)] == ["agent-1"]
    assert local_grid.cli("status", "--json").returncode == 0

    # the pages: /api/nodes answers 200 with the good nodes
    url = local_grid.state.leader_info()["http"]
    with urllib.request.urlopen(f"{url}/api/nodes", timeout=10) as resp:
        assert resp.status == 200
        assert {n["node_id"] for n in json.loads(resp.read())} == good

    # the master's health tick keeps working: it still notices an agent going offline
    local_grid.kill("agent-1")

    def agent_offline() -> bool:
        rec = local_grid.state.agent("agent-1")
        return rec is not None and rec.status == AgentStatus.OFFLINE

    wait_for(agent_offline, timeout=30, what="agent-1 marked offline by the health tick")
    assert "skipping malformed record" in local_grid.log("master")
    assert "Traceback" not in local_grid.log("master")
    for proc in local_grid.node_processes():  # the killed agent's nodes: ours to end
        proc.kill()
        wait_gone(proc.pid)
