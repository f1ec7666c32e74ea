"""The capacity strategy: up within one evaluation, down carefully, forecasts only while right."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from pydantic import TypeAdapter

from grid.autoscaler.engine import PoolState, evaluate, next_state
from grid.autoscaler.policy import Check, PoolPolicy
from grid.autoscaler.strategies.capacity import MIN_SCORED, best_period, capacity
from grid.autoscaler.votes import CheckInput, Vote

T0 = 1_767_571_200.0
CHECK: TypeAdapter[Any] = TypeAdapter(Check)
BASE = {"strategy": "capacity", "metric": "request_rate", "capacity": 100}


def check(**extra: Any) -> Any:
    return CHECK.validate_python({**BASE, **extra})


def run(totals: list[float], current: int, every: float = 10.0, **extra: Any) -> list[Vote]:
    """Feed one interval total per evaluation, `current` nodes throughout; every vote."""
    memory: dict[str, Any] | None = None
    votes = []
    for i, total in enumerate(totals):
        vote = capacity(check(**extra), CheckInput(value=total), current, now=T0 + every * i,
                        memory=memory)  # fmt: skip
        memory = vote.memory
        votes.append(vote)
    return votes


# ---- up: within one evaluation, no tolerance band, no step limit --------------------------


@pytest.mark.parametrize(
    ("before", "after", "current", "desired"),
    [
        (270, 1350, 3, 15),  # x5 in one interval: 1350 / 90 -> 15 at once
        (270, 2700, 3, 30),  # x10: the step grows with the gap, no limit
        (270, 275, 3, 4),  # 275 > 3 x 90: no tolerance band going up
        (270, 270, 3, 3),  # 270 = 3 x 90 exactly: enough
        (850, 4000, 10, 45),
    ],
)
def test_a_step_is_followed_within_one_evaluation(
    before: float, after: float, current: int, desired: int
) -> None:
    *_, vote = run([before] * 30 + [after], current)
    assert (vote.action, vote.desired) == ("up" if desired > current else "hold", desired)
    assert vote.details["need"] == desired


def test_an_error_input_is_an_error_vote() -> None:
    vote = capacity(check(), CheckInput(error="no samples of request_rate in 10s"), 3, now=T0)
    assert vote.action == "error" and vote.memory is None


# ---- down: keep what the recent peak and the trusted forecasts need ---------------------


@pytest.mark.parametrize(
    ("hold", "seconds_since_peak", "desired"),
    [
        ("2m", 60, 10),  # the 900 peak of 60 s ago is within hold + spin_up (3m): keep 10
        ("2m", 170, 10),
        ("2m", 200, 4),  # it left the window: down to what 300 needs (+ noise: none)
        ("5m", 200, 10),
    ],
)
def test_a_scale_down_keeps_the_recent_peak(
    hold: str, seconds_since_peak: int, desired: int
) -> None:
    quiet = int(seconds_since_peak / 10)
    *_, vote = run([900.0] * 20 + [300.0] * quiet, 10, hold=hold, periods=False)
    assert vote.desired == desired, vote.reason
    if desired == 10:
        assert "keep 10: peak of the last" in vote.reason


def cycle(minutes: float, period: float = 240.0, every: float = 10.0) -> list[float]:
    """A load between 200 and 1000 with the given period (seconds), one total per interval."""
    count = int(minutes * 60 / every)
    return [600 + 400 * math.sin(2 * math.pi * i * every / period) for i in range(count)]


def test_a_scale_down_is_held_while_the_forecasts_upper_band_needs_the_capacity() -> None:
    """A 4-minute cycle, 12 nodes, spin-up 90 s, 45 s after the trough: what was measured in
    the last 90 s fits in fewer nodes, but the period's forecast (trusted) sees the peak of
    the next spin-up window coming back, so the capacity stays."""
    loads = cycle(45)
    trough = min(range(len(loads) - 40, len(loads) - 16), key=lambda i: loads[i])
    at = trough + 4
    coming = max(loads[at + 1 : at + 11])  # the next 100 s: spin-up + one interval
    needed = math.ceil(coming / 90)
    assert needed == 12
    vote = run(loads[: at + 1], 12, hold="0s", spin_up="90s")[-1]
    season = vote.details["season"]
    assert season["period"] == pytest.approx(240, rel=0.1)
    assert season["used"] is True and season["error"] <= 0.05
    assert vote.desired == 12, vote.reason
    assert "period 4m" in vote.reason and "used: recent error" in vote.reason
    # The same moment without the period's forecast: it would let capacity go.
    plain = run(loads[: at + 1], 12, hold="0s", spin_up="90s", periods=False)[-1]
    assert plain.action == "down" and (plain.desired or 0) < needed, plain.reason


# ---- a forecast acts only while its recent error is small ----------------------------------


def test_a_forecast_with_high_recent_error_is_not_used() -> None:
    rng = random.Random(5)
    noisy = [600 * (1 + rng.choice([-0.3, 0.3])) for _ in range(60)]  # a trend cannot follow
    vote = run(noisy, 10, periods=False)[-1]
    trend = vote.details["trend"]
    assert trend["error"] > 0.05 and trend["used"] is False
    assert "trend" in vote.reason and "not used: recent error" in vote.reason
    assert vote.details["need"] == math.ceil(noisy[-1] / 90)  # the measured load alone


@pytest.mark.parametrize(("slope", "used"), [(2.0, True), (0.0, False)])
def test_a_trend_that_has_been_right_is_used_to_scale_ahead(slope: float, used: bool) -> None:
    ramp = [500 + slope * i for i in range(MIN_SCORED + 30)]
    vote = run(ramp, 6)[-1]
    assert vote.details["trend"]["used"] is used  # flat: no better than no forecast at all
    if slope:  # 70 s ahead (spin-up 60 s + the 10 s interval): seven intervals higher
        assert vote.details["trend"]["forecast"] == pytest.approx(ramp[-1] + 7 * slope, rel=0.01)
        assert "used: recent error" in vote.reason


def test_the_first_forecasts_are_not_used_until_scored() -> None:
    vote = run([500.0 + i for i in range(8)], 6)[-1]
    assert vote.details["trend"]["used"] is False
    assert f"/{MIN_SCORED} forecasts scored" in vote.reason


# ---- periods found from the data -----------------------------------------------------------


@pytest.mark.parametrize("period", [120.0, 240.0, 600.0])
def test_best_period_finds_a_cycle(period: float) -> None:
    values = cycle(45, period)
    found = best_period(values, 10.0, 60.0, 900.0)
    assert found == pytest.approx(period, rel=0.05)


def test_best_period_finds_none_in_noise_or_a_ramp() -> None:
    rng = random.Random(3)
    assert best_period([rng.gauss(500, 50) for _ in range(270)], 10.0, 60.0, 900.0) is None
    assert best_period([100.0 + i for i in range(270)], 10.0, 60.0, 900.0) is None


# ---- the engine: a small step does not use up the scale-up cooldown -----------------------


@pytest.mark.parametrize(
    ("last_step", "wanted", "desired", "blocked"),
    [
        (1, 16, 16, False),  # a forecast's +1, then the measured +6: goes through
        (6, 16, 10, True),  # no larger than the last step: the cooldown holds
        (None, 16, 10, True),  # unknown last step: the cooldown holds as before
    ],
)
def test_a_small_step_does_not_use_up_the_scale_up_cooldown(
    last_step: int | None, wanted: int, desired: int, blocked: bool
) -> None:
    policy = PoolPolicy.model_validate({
        "pool": "web", "min": 1, "max": 50, "tolerance": 0.0,
        "cooldown": {"scale_up": "1m", "scale_down": "5m"},
        "checks": [{"name": "a", "strategy": "target_value", "metric": "a", "target": 100}],
    })  # fmt: skip
    state = PoolState(last_eval=T0 - 10, last_up=T0 - 10, last_up_step=last_step)
    decision = evaluate(policy, 10, {"a": CheckInput(value=wanted * 10)}, state, T0)
    assert (decision.desired, decision.cooldown["blocked"]) == (desired, blocked)
    if not blocked:
        assert next_state(state, decision, applied=True).last_up_step == wanted - 10
