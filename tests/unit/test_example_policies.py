"""Every example in policies/ validates, and each runs through the engine without an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from grid.autoscaler.engine import PoolState, collect_inputs, evaluate
from grid.autoscaler.metrics import MemoryMetrics, uniform_partial
from grid.autoscaler.policy import PoolPolicy, load_policy_file

POLICIES = Path(__file__).parents[2] / "policies"
FILES = sorted(POLICIES.glob("*.yaml"))
NOW = 1_767_571_200.0


def test_the_examples_exist() -> None:
    assert {f.name for f in FILES} >= {
        "cpu-threshold.yaml", "requests-target.yaml", "business-hours.yaml",
        "predictive-costs.yaml", "default.yaml",
    }  # fmt: skip


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_validates(path: Path) -> None:
    policies = load_policy_file(path)
    assert policies
    for policy in policies:
        assert policy.checks
        assert PoolPolicy.from_json(policy.to_json()) == policy


@pytest.mark.parametrize(
    ("name", "strategies"),
    [
        ("cpu-threshold.yaml", {"threshold"}),
        ("requests-target.yaml", {"target_value"}),
        ("business-hours.yaml", {"schedule", "target_value"}),
        ("predictive-costs.yaml", {"predictive", "target_value"}),
        ("default.yaml", {"capacity"}),
    ],
)
def test_example_shows_its_strategy(name: str, strategies: set[str]) -> None:
    [policy] = load_policy_file(POLICIES / name)
    assert {c.strategy for c in policy.checks} == strategies
    if name == "predictive-costs.yaml":
        assert policy.placement.strategy == "cost"
        assert any(getattr(c, "shadow", False) for c in policy.checks)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_evaluates_without_errors(path: Path) -> None:
    for policy in load_policy_file(path):
        source = MemoryMetrics()
        for i in range(120):  # ten minutes of 5-second ticks from 6 nodes
            for metric in ("cpu_percent", "request_rate", "inflight"):
                source.add(policy.pool, metric, uniform_partial(NOW - 5 * i, "a", 6, 50.0))
        decision = evaluate(policy, 6, collect_inputs(source, policy, NOW), PoolState(), NOW)
        assert [v for v in decision.votes if v.action == "error"] == []
        assert policy.min <= decision.desired <= max(policy.max, decision.bounds["max"])
