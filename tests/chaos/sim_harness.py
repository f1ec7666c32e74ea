"""The chaos checks for simulated nodes (`grid sim`), and what a sim scenario watches.

The process checks of `harness.process_violations` look for node processes; simulated nodes
have none, so `workload_violations` asks the sim host (`GET /workloads`) and each node's own
endpoint instead. Everything else is the harness' own `state_violations`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable

from grid.core import naming
from grid.core.state import AgentRecord, AgentStatus, NodeRecord, split_entry
from grid.workers.agent.health import fetch, probe
from tests.chaos.harness import ChaosGrid, state_violations
from tests.gridproc import BackgroundSampler

#: index statuses that hold a slot on their agent (the reconciler's `_OCCUPYING`)
OCCUPYING = {"pending", "starting", "running", "restarting", "stopping"}


def workloads(host_url: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = json.loads(fetch(host_url, "/workloads", timeout=5) or b"null")
    assert rows is not None, f"the sim host at {host_url} did not answer"
    return rows


def workload_violations(
    nodes: list[NodeRecord], agents: list[AgentRecord], rows: list[dict[str, str]]
) -> list[str]:
    """Simulated nodes against the records.

    - no node id runs twice on agents that are online;
    - every workload running on an online agent is owned by a record placing it there;
    - every running record has its workload, and its endpoint answers /health with its id;
    - no active record on an agent that is offline or gone.
    Workloads of silent (offline) agents are the nodes of a lost machine: they run on,
    unreachable, until their agent returns and fences them, so they are not counted.
    """
    problems: list[str] = []
    online = {a.agent_id for a in agents if a.status == AgentStatus.ONLINE}
    status = {a.agent_id: a.status for a in agents}
    running = [r for r in rows if r["state"] == "running" and r["agent_id"] in online]
    for node_id, count in Counter(r["node_id"] for r in running).items():
        if count > 1:
            problems.append(f"node {node_id} runs {count} times on online agents")
    owners = {(n.agent_id, n.node_id) for n in nodes if n.status in ("running", "restarting",
                                                                      "starting")}  # fmt: skip
    for row in running:
        if (row["agent_id"], row["node_id"]) not in owners:
            problems.append(f"workload {row['node_id']} on {row['agent_id']} is owned by no record")
    live = {(r["agent_id"], r["node_id"]): r["endpoint"] for r in running}
    for n in nodes:
        if n.active and status.get(n.agent_id) != AgentStatus.ONLINE:
            problems.append(f"node {n.node_id} is {n.status} on agent {n.agent_id} "
                            f"({status.get(n.agent_id, 'gone')})")  # fmt: skip
        if n.status != "running":
            continue
        endpoint = live.get((n.agent_id, n.node_id))
        if endpoint is None:
            problems.append(f"record {n.node_id} says running on {n.agent_id}: no workload")
        elif endpoint != n.endpoint or (probe(n.endpoint) or {}).get("node_id") != n.node_id:
            problems.append(f"record {n.node_id}: {n.endpoint} does not answer as that node")
    return problems


def sim_violations(host_url: str) -> Callable[[ChaosGrid, dict[str, int] | None], list[str]]:
    """The invariants of `harness.invariant_violations`, with simulated nodes."""

    def check(grid: ChaosGrid, desired: dict[str, int] | None = None) -> list[str]:
        problems, nodes = state_violations(grid, desired)
        return problems + workload_violations(nodes, grid.state.agents(), workloads(host_url))

    return check


def log_line(text: str, prefix: str) -> str | None:
    """The rest of the first line of a `grid sim` log that starts with `prefix`."""
    match = re.search(rf"^{re.escape(prefix)}(.*)$", text, re.MULTILINE)
    return match.group(1).strip() if match else None


class CapacityWatch(BackgroundSampler):
    """Samples every agent's index: records each time an agent holds more nodes than it may."""

    def __init__(self, url: str, interval: float = 0.1) -> None:
        super().__init__(url, interval)
        self.exceeded: list[str] = []
        self.most: dict[str, int] = {}

    def sample(self) -> None:
        agents = self.state.agents()
        pipe = self.client.pipeline(transaction=False)
        for agent in agents:
            pipe.hvals(naming.agent_nodes_key(agent.agent_id))
        for agent, entries in zip(agents, pipe.execute(), strict=True):
            held = sum(1 for e in entries if (split_entry(e) or ("", "", ""))[1] in OCCUPYING)
            self.most[agent.agent_id] = max(self.most.get(agent.agent_id, 0), held)
            if held > agent.max_nodes:
                self.exceeded.append(f"{agent.agent_id} held {held} > {agent.max_nodes}")
