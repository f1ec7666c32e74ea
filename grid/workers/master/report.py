"""The cluster status report shared by `grid status` and the master's HTTP pages."""

from __future__ import annotations

from typing import Any

from grid.core import naming
from grid.core.state import AgentRecord, AgentStatus, GridState, NodeStatus
from grid.workers.master.monitor import cluster_state, pool_summary


def agents_with_node_counts(state: GridState) -> list[AgentRecord]:
    """Agents with `node_count` taken from the node records now, not from the last beat."""
    counts: dict[str, int] = {}
    for node in state.nodes():
        if node.status != NodeStatus.LOST:
            counts[node.agent_id] = counts.get(node.agent_id, 0) + 1
    agents = state.agents()
    for agent in agents:
        agent.node_count = counts.get(agent.agent_id, 0)
    return agents


def status_report(state: GridState) -> dict[str, Any]:
    agent_records = state.agents()
    node_records = state.nodes()
    desired = state.desired()
    agent_counts = {s.value: 0 for s in AgentStatus}
    for a in agent_records:
        agent_counts[a.status] = agent_counts.get(a.status, 0) + 1
    node_counts = {s.value: 0 for s in NodeStatus}
    for n in node_records:
        node_counts[n.status] = node_counts.get(n.status, 0) + 1
    cluster, why = cluster_state(agent_records, desired, node_records)
    info = state.leader_info()
    holder = state.lease_holder(naming.leader_key())
    return {
        "cluster": cluster,
        "reason": why,
        "leader": info.get("master_id") if holder else None,
        "pages": (info.get("http") or None) if holder else None,
        "agents": {"total": len(agent_records), **agent_counts},
        "nodes": {"total": len(node_records), **node_counts},
        "pools": pool_summary(state),
    }
