"""Where new nodes go and which nodes go first: pure functions, no I/O.

Default (`spread`): each new node goes to the healthy agent with the most free capacity, so a
pool spreads evenly; scale-down stops the newest nodes first. With `strategy: cost` new nodes
fill the cheapest matching agents first and scale-down removes the most expensive first.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from grid.core.placement_rules import DEFAULT_RULES, PlacementRules


@dataclass(frozen=True)
class AgentSlot:
    """An agent as placement sees it: how many more nodes it may take, and at what cost."""

    agent_id: str
    free: int
    cost: float = 0.0
    platform: str = "process"
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeSlot:
    node_id: str
    agent_id: str
    created_at: float


@dataclass(frozen=True)
class Placement:
    agent_ids: list[str]  # one entry per placed node
    shortfall: int  # nodes that did not fit


def matches(agent: AgentSlot, rules: PlacementRules) -> bool:
    if rules.platforms and agent.platform not in rules.platforms:
        return False
    return all(agent.labels.get(k) == v for k, v in rules.require_labels.items())


def preferred(agent: AgentSlot, rules: PlacementRules) -> bool:
    if rules.prefer_platforms and agent.platform not in rules.prefer_platforms:
        return False
    return all(agent.labels.get(k) == v for k, v in rules.prefer_labels.items())


def place(
    count: int, agents: Sequence[AgentSlot], rules: PlacementRules = DEFAULT_RULES
) -> Placement:
    """Assign `count` new nodes to agents; never beyond an agent's free capacity."""
    if count <= 0:
        return Placement([], 0)
    heap: list[_Entry] = []
    for agent in agents:
        if agent.free <= 0 or not matches(agent, rules):
            continue
        rank = 0 if preferred(agent, rules) else 1
        heap.append(_entry(rank, agent, agent.free, rules))
    heapq.heapify(heap)
    chosen: list[str] = []
    while heap and len(chosen) < count:
        entry = heapq.heappop(heap)
        chosen.append(entry.agent.agent_id)
        if entry.free > 1:
            heapq.heappush(heap, _entry(entry.rank, entry.agent, entry.free - 1, rules))
    return Placement(chosen, count - len(chosen))


@dataclass(frozen=True, order=True)
class _Entry:
    """Heap entry: compared by `sort_key` only."""

    sort_key: tuple[int, float, float, str]
    rank: int = field(compare=False)
    free: int = field(compare=False)
    agent: AgentSlot = field(compare=False)


def _entry(rank: int, agent: AgentSlot, free: int, rules: PlacementRules) -> _Entry:
    if rules.strategy == "cost":
        key = (rank, agent.cost, float(-free), agent.agent_id)
    else:
        key = (rank, float(-free), 0.0, agent.agent_id)
    return _Entry(key, rank, free, agent)


def choose_victims(
    count: int,
    nodes: Sequence[NodeSlot],
    agents: Sequence[AgentSlot],
    rules: PlacementRules = DEFAULT_RULES,
) -> list[str]:
    """The `count` nodes to stop on scale-down: newest first, or most expensive first."""
    if count <= 0:
        return []
    by_id = {a.agent_id: a for a in agents}

    def order(node: NodeSlot) -> tuple[float, float, str]:
        agent = by_id.get(node.agent_id)
        cost = agent.cost if agent is not None else float("inf")
        if rules.strategy == "cost":
            return (-cost, -node.created_at, node.node_id)
        return (-node.created_at, 0.0, node.node_id)

    return [n.node_id for n in sorted(nodes, key=order)[:count]]
