"""The cluster status report shared by `grid status`, the master's pages and its metrics.

`build_report` is a pure function of the records. Reading every record costs seconds at
50,000 nodes, so the leader, which holds them all in its view anyway, publishes the report
after each health pass (`GridState.publish_summary`) and readers use that while it is fresh;
with no leader publishing they compute it from Redis themselves.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from grid.core import naming
from grid.core.state import AgentRecord, AgentStatus, GridState, NodeRecord, NodeStatus
from grid.workers.master.monitor import cluster_state

#: a published summary older than this is not trusted (its leader may be gone)
SUMMARY_MAX_AGE = 10.0


def agents_with_node_counts(state: GridState) -> list[AgentRecord]:
    """Agents with `node_count` from their node index now (lost nodes not counted), not
    from the last heartbeat: one small read per agent, not a read of every node record."""
    agents = state.agents()
    counts = state.node_counts([a.agent_id for a in agents])
    for agent in agents:
        agent.node_count = counts.get(agent.agent_id, 0)
    return agents


def build_report(
    agents: Sequence[AgentRecord],
    nodes: Sequence[NodeRecord],
    desired: Mapping[str, int],
    pool_status: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """Cluster state, agent and node counts by status, and per pool: desired, counts,
    shortfall."""
    agent_counts = {s.value: 0 for s in AgentStatus}
    for a in agents:
        agent_counts[a.status] = agent_counts.get(a.status, 0) + 1
    node_counts = {s.value: 0 for s in NodeStatus}
    pools: dict[str, dict[str, Any]] = {}
    for n in nodes:
        node_counts[n.status] = node_counts.get(n.status, 0) + 1
        entry = pools.setdefault(n.pool, {"desired": desired.get(n.pool), "nodes": {}})
        entry["nodes"][n.status.value] = entry["nodes"].get(n.status.value, 0) + 1
    for pool, want in desired.items():
        pools.setdefault(pool, {"desired": want, "nodes": {}})
    for pool, entry in pools.items():
        entry["shortfall"] = pool_status.get(pool, {}).get("shortfall", 0)
    cluster, why = cluster_state(agents, dict(desired), nodes)
    return {
        "cluster": cluster.value,
        "reason": why,
        "agents": {"total": len(agents), **agent_counts},
        "nodes": {"total": len(nodes), **node_counts},
        "pools": pools,
    }


def status_report(state: GridState, now: float | None = None) -> dict[str, Any]:
    """The report, from the leader's published summary when fresh, else computed here;
    with who leads and where its pages are, read now."""
    now = time.time() if now is None else now
    summary = state.summary()
    if summary is not None and now - float(summary.get("at", 0)) <= SUMMARY_MAX_AGE:
        report = {k: v for k, v in summary.items() if k != "at"}
        report["as_of"] = summary["at"]
    else:
        report = build_report(state.agents(), state.nodes(), state.desired(), state.pool_status())
        report["as_of"] = now
    info = state.leader_info()
    holder = state.lease_holder(naming.leader_key())
    report["leader"] = info.get("master_id") if holder else None
    report["pages"] = (info.get("http") or None) if holder else None
    return report
