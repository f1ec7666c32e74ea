"""The cluster status report shared by `grid status`, the master's pages and its metrics.

Counts come from the agents' node indexes (`GridState.census`: one small read per agent, no
node record), so the report is exact at any moment and cheap at 50,000 nodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from grid.core import naming
from grid.core.state import AgentRecord, AgentStatus, GridState, NodeCensus, NodeStatus
from grid.workers.master.monitor import cluster_state


def agents_with_node_counts(state: GridState) -> list[AgentRecord]:
    """Agents with `node_count` from their node index now (lost nodes not counted), not
    from the last heartbeat."""
    agents = state.agents()
    census = state.census([a.agent_id for a in agents])
    for agent in agents:
        agent.node_count = census.by_agent.get(agent.agent_id, 0)
    return agents


def build_report(
    agents: Sequence[AgentRecord],
    census: NodeCensus,
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
    for (pool, status), count in sorted(census.by_pool_status.items()):
        node_counts[status] = node_counts.get(status, 0) + count
        entry = pools.setdefault(pool, {"desired": desired.get(pool), "nodes": {}})
        entry["nodes"][status] = count
    for pool, want in desired.items():
        pools.setdefault(pool, {"desired": want, "nodes": {}})
    for pool, entry in pools.items():
        entry["shortfall"] = pool_status.get(pool, {}).get("shortfall", 0)
    cluster, why = cluster_state(agents, dict(desired), census)
    return {
        "cluster": cluster.value,
        "reason": why,
        "agents": {"total": len(agents), **agent_counts},
        "nodes": {"total": sum(census.by_pool_status.values()), **node_counts},
        "pools": pools,
    }


def status_report(state: GridState) -> dict[str, Any]:
    """The report as Redis holds it now, with who leads and where its pages are."""
    agents = state.agents()
    census = state.census(state.index_owners())
    report = build_report(agents, census, state.desired(), state.pool_status())
    info = state.leader_info()
    holder = state.lease_holder(naming.leader_key())
    report["leader"] = info.get("master_id") if holder else None
    report["pages"] = (info.get("http") or None) if holder else None
    return report
