"""The engine: merge (safest wins), bounds, step limits, cooldowns, stabilisation, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from grid.autoscaler.engine import (
    Decision,
    PoolState,
    collect_inputs,
    evaluate,
    format_decision,
    next_state,
)
from grid.autoscaler.metrics import MemoryMetrics, WindowStats, uniform_partial
from grid.autoscaler.policy import PoolPolicy
from grid.autoscaler.votes import CheckInput

NOW = 1_767_571_200.0


def target(name: str, **extra: Any) -> dict[str, Any]:
    """A target_value check that, at current 10 and tolerance 0, votes value / 10."""
    return {"name": name, "strategy": "target_value", "metric": name, "target": 100, **extra}


def make_policy(checks: list[dict[str, Any]] | None = None, **fields: Any) -> PoolPolicy:
    body: dict[str, Any] = {
        "pool": "web", "min": 1, "max": 50, "tolerance": 0.0,
        "cooldown": {"scale_up": "1m", "scale_down": "5m"},
        "checks": checks if checks is not None else [target("a"), target("b")], **fields,
    }  # fmt: skip
    return PoolPolicy.model_validate(body)


def votes_for(*desired: int | None, current: int = 10) -> dict[str, CheckInput]:
    """Inputs that make checks a, b, c... vote the given sizes (None: a failing check)."""
    names = "abcdef"
    return {
        names[i]: CheckInput(error="no samples") if d is None
        else CheckInput(value=d * 100 / current)
        for i, d in enumerate(desired)
    }  # fmt: skip


def decide(policy: PoolPolicy, inputs: dict[str, CheckInput], current: int = 10,
           state: PoolState | None = None, now: float = NOW) -> Decision:  # fmt: skip
    return evaluate(policy, current, inputs, state or PoolState(), now)


# ---- merge -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "merged", "desired", "winner"),
    [
        (15, 12, 15, 15, "a"),  # both up: the larger
        (8, 12, 12, 12, "b"),  # they disagree: keep the most capacity
        (6, 8, 8, 8, "b"),  # both down: the smaller cut
        (10, 7, 10, 10, "a"),  # one holds: it vetoes the scale-in
        (None, 7, 7, 7, "b"),  # a failing check abstains (on_check_error: ignore)
        (None, None, 10, 10, None),  # nobody voted: hold
    ],
)
def test_merge_safest_wins(
    a: int | None, b: int | None, merged: int, desired: int, winner: str | None
) -> None:
    decision = decide(make_policy(), votes_for(a, b))
    assert (decision.merged, decision.desired) == (merged, desired)
    if winner:
        assert decision.merge.startswith(f"{winner} wins with {merged}")
    else:
        assert decision.merge.startswith("no check voted")


def test_on_check_error_fail_holds() -> None:
    decision = decide(make_policy(on_check_error="fail"), votes_for(None, 20))
    assert decision.desired == 10 and decision.action == "hold"
    assert "on_check_error: fail" in decision.reason and "a (no samples)" in decision.reason


def test_a_check_that_raises_becomes_an_error_vote() -> None:
    decision = decide(make_policy(), {**votes_for(None, 12), "a": CheckInput(value=float("nan"))})
    assert decision.votes[0].action == "error"
    assert decision.votes[0].reason.startswith("ValueError")
    assert decision.desired == 12


def test_shadow_votes_are_recorded_not_counted() -> None:
    policy = make_policy([
        target("a"),
        {"name": "f", "strategy": "predictive", "metric": "f", "target": 100,
         "min_history": "10m", "history": "30m", "shadow": True},
    ])  # fmt: skip
    rising = [(NOW - 60 * (30 - i), 1000.0 + 100 * i) for i in range(30)]
    decision = decide(policy, {"a": CheckInput(value=100), "f": CheckInput(series=rising)})
    shadow = decision.votes[1]
    assert shadow.shadow and shadow.desired is not None and shadow.desired > 10
    assert decision.desired == 10
    assert "f" in decision.memory


# ---- bounds and step limits --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "a", "current", "desired", "rules"),
    [
        ({"max": 12}, 20, 10, 12, ["max"]),
        ({"min": 8}, 3, 10, 8, ["min"]),
        ({"min": 12}, 10, 10, 12, ["min"]),  # outside the bounds with a hold vote: corrected
        ({"step_limits": {"up": 3}}, 20, 10, 13, ["step_up"]),
        ({"step_limits": {"up": "50%"}}, 20, 10, 15, ["step_up"]),
        ({"step_limits": {"up": "50%"}}, 4, 1, 2, ["step_up"]),  # at least one node
        ({"step_limits": {"down": 2}}, 3, 10, 8, ["step_down"]),
        ({"step_limits": {"down": "25%"}}, 3, 10, 7, ["step_down"]),
        ({"step_limits": {"up": 2}}, 11, 10, 11, []),
        ({"max": 30, "step_limits": {"up": 5}}, 40, 10, 15, ["max", "step_up"]),
        ({"min": 20, "step_limits": {"up": 4}}, 10, 10, 14, ["min", "step_up"]),  # ramps
    ],
)
def test_bounds_then_step_limits(
    fields: dict[str, Any], a: int, current: int, desired: int, rules: list[str]
) -> None:
    policy = make_policy([target("a")], **fields)
    decision = decide(policy, votes_for(a, current=current), current=current)
    assert decision.desired == desired
    assert [c["rule"] for c in decision.clamps] == rules


SCHEDULE = {
    "name": "s", "strategy": "schedule", "timezone": "UTC",
    "periods": [{"start": "0 0 * * *", "duration": "1h", "min": 15, "max": 20}],
}  # fmt: skip


def test_an_active_schedule_replaces_the_bounds() -> None:
    policy = make_policy([target("a"), SCHEDULE], max=12)
    inside = decide(policy, votes_for(8), now=NOW + 600)  # 00:10 UTC
    assert inside.bounds == {"min": 15, "max": 20, "source": "schedule: s"}
    assert inside.desired == 15
    assert "outside bounds [15, 20]" in inside.reason
    outside = decide(policy, votes_for(30), now=NOW + 7200)
    assert outside.bounds["source"] == "policy" and outside.desired == 12


# ---- cooldowns and stabilisation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "last_up", "last_down", "desired", "blocked"),
    [
        (15, NOW - 30, None, 10, True),  # scale-up cooldown 1m
        (15, NOW - 60, None, 15, False),
        (15, None, NOW - 5, 15, False),  # a recent scale-down does not block scaling up
        (5, None, NOW - 120, 10, True),  # scale-down cooldown 5m after a scale-down ...
        (5, NOW - 120, None, 10, True),  # ... and after a scale-up
        (5, NOW - 400, NOW - 300, 5, False),
    ],
)
def test_cooldowns_per_direction(
    a: int, last_up: float | None, last_down: float | None, desired: int, blocked: bool
) -> None:
    state = PoolState(last_eval=NOW - 15, last_up=last_up, last_down=last_down)
    decision = decide(make_policy([target("a")]), votes_for(a), state=state)
    assert decision.desired == desired
    assert decision.cooldown["blocked"] is blocked
    if blocked:
        assert "cooldown has" in decision.reason


def test_cooldown_does_not_keep_a_pool_outside_its_bounds() -> None:
    state = PoolState(last_up=NOW - 5)
    below = decide(make_policy([target("a")], min=12), votes_for(10), state=state)
    assert below.desired == 12 and not below.cooldown["blocked"]
    above = decide(make_policy([target("a")], max=8), votes_for(10), state=PoolState(last_down=NOW))
    assert above.desired == 8


def test_scale_down_stabilisation_keeps_the_largest_recent_vote() -> None:
    policy = make_policy([target("a")], cooldown={"scale_up": "0s", "scale_down": "5m"})
    state = PoolState(recent=[(NOW - 400, 20), (NOW - 200, 9), (NOW - 100, 8)])
    decision = decide(policy, votes_for(6), state=state)
    assert decision.desired == 9  # the vote from 400 s ago has left the 5-minute window
    assert decision.clamps[-1]["rule"] == "stabilization"
    assert [n for _, n in decision.recent] == [9, 8, 6]
    up = decide(policy, votes_for(12), state=state)
    assert up.desired == 12  # scale-up is never stabilised


def test_a_noisy_metric_does_not_flap() -> None:
    """A load alternating 15 % above and below 10 nodes' worth: it scales up once and holds."""
    policy = make_policy([target("a")], cooldown={"scale_up": "30s", "scale_down": "3m"})
    state, current, sizes = PoolState(), 10, []
    for i in range(40):
        now = NOW + 15 * i
        load = 1150 if i % 2 else 850
        decision = evaluate(policy, current, {"a": CheckInput(value=load / current)}, state, now)
        state = next_state(state, decision, applied=decision.changed)
        current = decision.desired
        sizes.append(current)
    changes = [b for a, b in zip(sizes, sizes[1:], strict=False) if a != b]
    assert len(changes) <= 2, sizes


# ---- state and records -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "applied", "last_up", "last_down"),
    [(15, True, NOW, None), (5, True, None, NOW), (15, False, None, None), (10, True, None, None)],
)
def test_next_state(a: int, applied: bool, last_up: float | None, last_down: float | None) -> None:
    decision = decide(make_policy([target("a")]), votes_for(a))
    state = next_state(PoolState(), decision, applied)
    assert (state.last_eval, state.last_up, state.last_down) == (NOW, last_up, last_down)
    assert state.recent == [(NOW, a)]
    assert PoolState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_decision_is_json_and_explains_itself() -> None:
    policy = make_policy([target("a"), target("b")], max=14, dry_run=True)
    decision = decide(policy, votes_for(20, 12))
    data = json.loads(json.dumps(decision.to_dict()))
    assert set(data) >= {"pool", "ts", "current", "desired", "action", "reason", "votes",
                         "merged", "merge", "bounds", "clamps", "cooldown", "dry_run"}  # fmt: skip
    assert "memory" not in data and "recent" not in data
    assert data["votes"][0]["check"] == "a" and data["votes"][0]["desired"] == 20
    again = Decision.from_dict(data)
    assert again.votes == decision.votes and again.desired == 14
    text = format_decision(data)
    assert "web: up 10 -> 14 (dry run)" in text
    assert "a wins with 20" in text and "max 14: 20 -> 14" in text
    assert decision.reason.startswith("scale up 10 -> 14: a: a avg 1m = 200")
    assert decision.reason.endswith("; max 14")


def test_reason_for_a_no_op_names_the_winner() -> None:
    decision = decide(make_policy(), votes_for(10, 8))
    assert decision.action == "hold" and decision.reason.startswith("hold at 10: a: ")


# ---- collecting inputs -------------------------------------------------------------------


class FailingSource:
    def window(self, *args: Any, **kwargs: Any) -> WindowStats | None:
        raise ConnectionError("redis went away")

    def series(self, *args: Any, **kwargs: Any) -> list[tuple[float, float]]:
        raise ConnectionError("redis went away")


def test_collect_inputs() -> None:
    source = MemoryMetrics()
    for i in range(8):
        source.add("web", "a", uniform_partial(NOW - 70 + 10 * i, "agent-1", 4, 50.0 + i))
    policy = make_policy([
        target("a", window="30s"), target("a2", metric="a", aggregation="p95", window="1m"),
        target("missing"), SCHEDULE,
        {"name": "f", "strategy": "predictive", "metric": "a", "target": 10},
    ])  # fmt: skip
    inputs = collect_inputs(source, policy, NOW)
    assert inputs["a"].value == pytest.approx(56)  # the three ticks after NOW - 30
    assert inputs["a"].nodes == pytest.approx(4)
    assert inputs["a2"].value == pytest.approx(57, rel=0.01)
    assert inputs["missing"].error == "no samples of missing in 1m"
    assert inputs["s"] == CheckInput()
    # per-minute pool totals (4 nodes x the per-node mean of each minute bucket)
    assert inputs["f"].series == [(NOW - 120, 200.0), (NOW - 60, 214.0), (NOW, 228.0)]
    failing = collect_inputs(FailingSource(), policy, NOW)
    assert failing["a"].error == "reading a: redis went away"
    assert failing["f"].error == "reading a: redis went away"


def test_importing_the_autoscaler_loads_no_heavy_library() -> None:

    code = (
        "import sys, grid.autoscaler, grid.autoscaler.backtest;"
        "print(sorted(m for m in ('pandas', 'sklearn', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
