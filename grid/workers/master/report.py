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


def prometheus_text(state: GridState) -> str:
    """Grid-level gauges in the Prometheus text format."""
    report = status_report(state)
    lines = [
        "# HELP grid_agents Agents by status.",
        "# TYPE grid_agents gauge",
        *(f'grid_agents{{status="{s.value}"}} {report["agents"][s.value]}' for s in AgentStatus),
        "# HELP grid_nodes Nodes by pool and status.",
        "# TYPE grid_nodes gauge",
    ]
    for pool, entry in sorted(report["pools"].items()):
        for status, count in sorted(entry["nodes"].items()):
            lines.append(f'grid_nodes{{pool="{pool}",status="{status}"}} {count}')
    lines += ["# HELP grid_pool_desired Desired size per pool.", "# TYPE grid_pool_desired gauge"]
    for pool, entry in sorted(report["pools"].items()):
        if entry["desired"] is not None:
            lines.append(f'grid_pool_desired{{pool="{pool}"}} {entry["desired"]}')
    lines += [
        "# HELP grid_pool_shortfall Nodes that do not fit.",
        "# TYPE grid_pool_shortfall gauge",
    ]
    for pool, entry in sorted(report["pools"].items()):
        lines.append(f'grid_pool_shortfall{{pool="{pool}"}} {entry["shortfall"]}')
    state_value = {"healthy": 0, "degraded": 1, "critical": 2}[report["cluster"]]
    lines += [
        "# HELP grid_cluster_state 0 healthy, 1 degraded, 2 critical.",
        "# TYPE grid_cluster_state gauge",
        f"grid_cluster_state {state_value}",
    ]
    return "\n".join(lines) + "\n"
