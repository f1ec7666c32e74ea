"""Placement (grid.workers.master.placement): where new nodes go, which stop first. Table-driven."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from grid.core.placement_rules import DEFAULT_RULES, PlacementRules
from grid.workers.master.placement import (
    AgentSlot,
    NodeSlot,
    choose_victims,
    matches,
    place,
    preferred,
)

COST = PlacementRules(strategy="cost")


def slot(
    agent_id: str, free: int, cost: float = 0.0, platform: str = "process", **labels: str
) -> AgentSlot:
    return AgentSlot(agent_id, free, cost, platform, dict(labels))


# (count, agents, rules, expected nodes per agent, expected shortfall)
PLACE_CASES = [
    pytest.param(0, [slot("a", 3)], DEFAULT_RULES, {}, 0, id="nothing-to-place"),
    pytest.param(-2, [slot("a", 3)], DEFAULT_RULES, {}, 0, id="negative-count"),
    pytest.param(3, [], DEFAULT_RULES, {}, 3, id="no-agents-all-short"),
    pytest.param(
        4, [slot("a", 10), slot("b", 10)], DEFAULT_RULES, {"a": 2, "b": 2}, 0, id="spread-even"
    ),
    pytest.param(
        5,
        [slot("a", 2), slot("b", 3)],
        DEFAULT_RULES,
        {"a": 2, "b": 3},
        0,
        id="spread-by-free-capacity",
    ),
    pytest.param(
        3,
        [slot("a", 1), slot("b", 6)],
        DEFAULT_RULES,
        {"b": 3},
        0,
        id="spread-fills-the-emptiest-first",
    ),
    pytest.param(
        7,
        [slot("a", 2), slot("b", 3)],
        DEFAULT_RULES,
        {"a": 2, "b": 3},
        2,
        id="shortfall-never-over-capacity",
    ),
    pytest.param(2, [slot("a", 0), slot("b", -1)], DEFAULT_RULES, {}, 2, id="full-agents-skipped"),
    pytest.param(
        4,
        [slot("a", 5, cost=2.0), slot("b", 5, cost=1.0)],
        COST,
        {"b": 4},
        0,
        id="cost-cheapest-first",
    ),
    pytest.param(
        6,
        [slot("a", 5, cost=2.0), slot("b", 5, cost=1.0)],
        COST,
        {"a": 1, "b": 5},
        0,
        id="cost-overflows-to-the-next",
    ),
    pytest.param(
        12,
        [slot("a", 5, cost=2.0), slot("b", 5, cost=1.0)],
        COST,
        {"a": 5, "b": 5},
        2,
        id="cost-shortfall",
    ),
    pytest.param(
        3,
        [slot("a", 5, zone="x"), slot("b", 5, zone="y")],
        PlacementRules(require_labels={"zone": "y"}),
        {"b": 3},
        0,
        id="require-labels",
    ),
    pytest.param(
        7,
        [slot("a", 5, zone="x"), slot("b", 5, zone="y")],
        PlacementRules(require_labels={"zone": "y"}),
        {"b": 5},
        2,
        id="require-labels-shortfall-not-elsewhere",
    ),
    pytest.param(
        2,
        [slot("a", 5), slot("b", 5, zone="y", disk="ssd")],
        PlacementRules(require_labels={"zone": "y", "disk": "hdd"}),
        {},
        2,
        id="require-all-labels",
    ),
    pytest.param(
        3,
        [slot("a", 9), slot("b", 2, disk="ssd")],
        PlacementRules(prefer_labels={"disk": "ssd"}),
        {"a": 1, "b": 2},
        0,
        id="prefer-labels-first-then-others",
    ),
    pytest.param(
        4,
        [slot("a", 5, platform="process"), slot("d", 5, platform="docker")],
        PlacementRules(platforms=["docker"]),
        {"d": 4},
        0,
        id="allowed-platforms",
    ),
    pytest.param(
        6,
        [slot("a", 5, platform="process"), slot("d", 5, platform="docker")],
        PlacementRules(platforms=["docker"]),
        {"d": 5},
        1,
        id="allowed-platforms-shortfall",
    ),
    pytest.param(
        3,
        [slot("a", 9, platform="process"), slot("k", 2, platform="kubernetes")],
        PlacementRules(prefer_platforms=["kubernetes"]),
        {"a": 1, "k": 2},
        0,
        id="prefer-platforms",
    ),
    pytest.param(
        3,
        [slot("a", 5, cost=1.0), slot("b", 5, cost=3.0, zone="y")],
        PlacementRules(strategy="cost", prefer_labels={"zone": "y"}),
        {"b": 3},
        0,
        id="preference-beats-cost",
    ),
]


@pytest.mark.parametrize(("count", "agents", "rules", "expected", "shortfall"), PLACE_CASES)
def test_place(
    count: int,
    agents: list[AgentSlot],
    rules: PlacementRules,
    expected: dict[str, int],
    shortfall: int,
) -> None:
    result = place(count, agents, rules)
    assert dict(Counter(result.agent_ids)) == expected
    assert result.shortfall == shortfall
    assert len(result.agent_ids) + result.shortfall == max(count, 0)


@pytest.mark.parametrize("count", range(0, 25))
def test_place_never_exceeds_free_capacity(count: int) -> None:
    agents = [slot("a", 2), slot("b", 3), slot("c", 0), slot("d", 7, cost=5.0)]
    for rules in (DEFAULT_RULES, COST):
        result = place(count, agents, rules)
        per_agent = Counter(result.agent_ids)
        for agent in agents:
            assert per_agent[agent.agent_id] <= max(agent.free, 0)
        assert result.shortfall == max(0, count - 12)


def test_spread_order_is_deterministic_and_balances_as_it_goes() -> None:
    # each new node goes to the agent with the most free slots at that moment (ties by id)
    result = place(5, [slot("b", 3), slot("a", 2)])
    assert result.agent_ids == ["b", "a", "b", "a", "b"]


def test_matches_and_preferred() -> None:
    agent = slot("a", 1, platform="docker", zone="y")
    assert matches(agent, DEFAULT_RULES) and preferred(agent, DEFAULT_RULES)
    assert matches(agent, PlacementRules(platforms=["docker", "process"]))
    assert not matches(agent, PlacementRules(platforms=["systemd"]))
    assert not matches(agent, PlacementRules(require_labels={"zone": "x"}))
    assert not preferred(agent, PlacementRules(prefer_platforms=["process"]))
    assert not preferred(agent, PlacementRules(prefer_labels={"zone": "x"}))


def test_rules_reject_unknown_keys_and_strategies() -> None:
    with pytest.raises(ValidationError):
        PlacementRules(strategy="random")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        PlacementRules(require_label={"a": "b"})  # type: ignore[call-arg]


NODES = [
    NodeSlot("n1", "cheap", 100.0),
    NodeSlot("n2", "dear", 101.0),
    NodeSlot("n3", "cheap", 102.0),
    NodeSlot("n4", "dear", 103.0),
    NodeSlot("n5", "mid", 104.0),
]
AGENTS = [slot("cheap", 0, cost=1.0), slot("mid", 0, cost=2.0), slot("dear", 0, cost=3.0)]

# (count, nodes, rules, expected victims in order)
VICTIM_CASES = [
    pytest.param(0, NODES, DEFAULT_RULES, [], id="none"),
    pytest.param(-1, NODES, DEFAULT_RULES, [], id="negative"),
    pytest.param(2, NODES, DEFAULT_RULES, ["n5", "n4"], id="newest-first"),
    pytest.param(9, NODES, DEFAULT_RULES, ["n5", "n4", "n3", "n2", "n1"], id="all-when-asked-more"),
    pytest.param(3, NODES, COST, ["n4", "n2", "n5"], id="most-expensive-first-then-newest"),
    pytest.param(5, NODES, COST, ["n4", "n2", "n5", "n3", "n1"], id="cost-full-order"),
    pytest.param(
        1, [*NODES, NodeSlot("n0", "gone", 1.0)], COST, ["n0"], id="cost-unknown-agent-first"
    ),
    pytest.param(
        2,
        [NodeSlot("b", "cheap", 5.0), NodeSlot("a", "cheap", 5.0), NodeSlot("c", "cheap", 1.0)],
        DEFAULT_RULES,
        ["a", "b"],
        id="same-age-by-id",
    ),
]


@pytest.mark.parametrize(("count", "nodes", "rules", "expected"), VICTIM_CASES)
def test_choose_victims(
    count: int, nodes: list[NodeSlot], rules: PlacementRules, expected: list[str]
) -> None:
    assert choose_victims(count, nodes, AGENTS, rules) == expected
