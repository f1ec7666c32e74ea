"""Agent health and cluster state, judged by the master from heartbeat times in Redis.

Transitions are emitted once: an agent's status and the cluster state are stored, and an
event is written only when a check finds them changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grid.core.events import EventLog, EventType
from grid.core.settings import Settings
from grid.core.state import (
    AgentRecord,
    AgentStatus,
    ClusterState,
    GridState,
    NodeCensus,
    NodeRecord,
    NodeStatus,
)


@dataclass(frozen=True)
class Transition:
    agent_id: str
    before: str
    after: str
    silence: float


def agent_status_for(silence: float, settings: Settings) -> AgentStatus:
    if silence >= settings.offline_after:
        return AgentStatus.OFFLINE
    if silence >= settings.degraded_after:
        return AgentStatus.DEGRADED
    return AgentStatus.ONLINE


def check_agents(
    state: GridState, events: EventLog, settings: Settings, now: float
) -> list[Transition]:
    """Move agents between online/degraded/offline; mark an offline agent's nodes lost.

    Incremental: only agents whose last heartbeat is older than `degraded_after` (the stale
    end of the heartbeat sorted set) and agents already marked unwell are read, so a pass
    over a healthy grid costs two small reads whatever its size.
    """
    changes = []
    beats = state.heartbeat_times(before=now - settings.degraded_after)
    recovering = sorted(state.unwell_agents() - set(beats))
    beats.update(state.heartbeat_times(ids=recovering))
    for agent in state.agents(sorted(set(beats) | set(recovering))):
        last = beats.get(agent.agent_id, agent.last_heartbeat)
        silence = max(0.0, now - last)
        after = agent_status_for(silence, settings).value
        if after == agent.status:
            continue
        changes.append(Transition(agent.agent_id, agent.status, after, silence))
        state.update_agent(agent.agent_id, status=after)
        if after == AgentStatus.ONLINE:
            down_since = agent.down_since or now
            events.emit(
                EventType.AGENT_RECOVERED,
                f"agent {agent.agent_id} is back after {now - down_since:.1f}s",
                agent_id=agent.agent_id,
                downtime_s=round(now - down_since, 3),
                was=agent.status,
            )
            continue
        if agent.status == AgentStatus.ONLINE:
            # the last beat we heard marks the start of the outage
            state.update_agent(agent.agent_id, down_since=last)
        kind = EventType.AGENT_OFFLINE if after == AgentStatus.OFFLINE else EventType.AGENT_DEGRADED
        events.emit(
            kind,
            f"agent {agent.agent_id} silent for {silence:.1f}s",
            agent_id=agent.agent_id,
            silence_s=round(silence, 3),
        )
        if after == AgentStatus.OFFLINE:
            mark_lost(state, events, state.nodes(agent_id=agent.agent_id))
    return changes


def mark_lost(state: GridState, events: EventLog, nodes: Sequence[NodeRecord]) -> int:
    """Mark an offline agent's active nodes lost (stopping ones are simply removed), with
    their events: one round trip to the state store and one to the events store."""
    pipe = state.pipeline()
    epipe = events.client.pipeline(transaction=False)  # events may live on their own Redis
    lost: list[NodeRecord] = []
    for node in nodes:
        if node.status == NodeStatus.STOPPING:
            state.delete_node(node.agent_id, node.node_id, pipe=pipe)  # was going away anyway
        elif node.active:
            lost.append(node)
    for node in lost:
        state.set_node_status(node.agent_id, [node.node_id], NodeStatus.LOST, pipe=pipe)
        events.emit(
            EventType.NODE_LOST,
            f"node {node.node_id} lost with its agent {node.agent_id}",
            agent_id=node.agent_id,
            node_id=node.node_id,
            pool=node.pool,
            pipe=epipe,
        )
    pipe.execute()
    epipe.execute()
    return len(lost)


def cluster_state(
    agents: Sequence[AgentRecord], desired: dict[str, int], census: NodeCensus
) -> tuple[ClusterState, str]:
    """(the cluster's state, why).

    Nodes being started (pending, starting) count as present: a scale-up in progress is not
    an outage. Crashed, failed, lost and missing nodes are what degrade a pool.
    """
    want = sum(desired.values())
    on_the_way = {NodeStatus.RUNNING, NodeStatus.PENDING, NodeStatus.STARTING}
    running = {p: 0 for p in desired}
    for (pool, status), count in census.by_pool_status.items():
        if status in on_the_way and pool in running:
            running[pool] += count
    online = [a for a in agents if a.status == AgentStatus.ONLINE]
    if want and not online:
        return ClusterState.CRITICAL, "no agent is online"
    short = {p: desired[p] - running[p] for p in desired if running[p] < desired[p]}
    if any(running[p] < desired[p] / 2 for p in desired if desired[p]):
        return ClusterState.CRITICAL, f"pools below half their size: {short}"
    if len(online) < len(agents):
        return ClusterState.DEGRADED, f"{len(agents) - len(online)} agent(s) not online"
    if short:
        return ClusterState.DEGRADED, f"pools below size: {short}"
    return ClusterState.HEALTHY, "all agents online and every pool at size"


def update_cluster_state(
    state: GridState,
    events: EventLog,
    agents: Sequence[AgentRecord],
    census: NodeCensus,
) -> str:
    """Record the cluster's state from the master's view; an event on each transition."""
    current, why = cluster_state(agents, state.desired(), census)
    before = state.cluster_state()
    if before != current:
        state.set_cluster_state(current)
        kind = {
            ClusterState.HEALTHY: EventType.CLUSTER_HEALTHY,
            ClusterState.DEGRADED: EventType.CLUSTER_DEGRADED,
            ClusterState.CRITICAL: EventType.CLUSTER_CRITICAL,
        }[current]
        events.emit(kind, f"cluster {current}: {why}", was=before or "", reason=why)
    return current
