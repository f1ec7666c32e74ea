"""Every strategy as a pure function: table-driven, including the Kubernetes HPA examples."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import TypeAdapter

from grid.autoscaler.policy import STRATEGIES, Check
from grid.autoscaler.strategies import STRATEGIES as STRATEGY_TABLE
from grid.autoscaler.strategies import vote
from grid.autoscaler.strategies.predictive import forecast, predictive, score_forecasts
from grid.autoscaler.strategies.schedule import active_period, schedule
from grid.autoscaler.strategies.target_value import target_value
from grid.autoscaler.strategies.threshold import threshold
from grid.autoscaler.votes import CheckInput, Vote, ceil_safe, proportional

CHECK: TypeAdapter[Any] = TypeAdapter(Check)


def check(**fields: Any) -> Any:
    return CHECK.validate_python(fields)


def at(text: str, tz: str = "UTC") -> float:
    """Unix time of a local wall-clock time."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


# ---- the proportional rule (Kubernetes HPA "Algorithm details") ----------------------------


@pytest.mark.parametrize(
    ("current", "value", "target", "tolerance", "base", "desired"),
    [
        # "if the current metric value is 200m, and the desired value is 100m, the number
        # of replicas will be doubled, since 200.0 / 100.0 == 2.0"
        (1, 200, 100, 0.1, None, 2),
        (3, 200, 100, 0.1, None, 6),
        (10, 200, 100, 0.1, None, 20),
        # "If the current value is instead 50m, you'll halve the number of replicas"
        (4, 50, 100, 0.1, None, 2),
        (10, 50, 100, 0.1, None, 5),
        (3, 50, 100, 0.1, None, 2),  # ceil(1.5)
        # "skips any scaling action if the ratio is sufficiently close to 1.0" (0.1)
        (10, 105, 100, 0.1, None, 10),
        (10, 91, 100, 0.1, None, 10),
        (10, 110, 100, 0.1, None, 10),  # |1.1 - 1| <= 0.1 still skips
        (10, 111, 100, 0.1, None, 12),  # ceil(11.1)
        (10, 89, 100, 0.1, None, 9),  # ceil(8.9)
        (10, 105, 100, 0.0, None, 11),
        # HPA walkthrough: 1 replica at 305 % of the request against a 50 % target -> 7
        (1, 305, 50, 0.1, None, 7),
        # 3 pods at 80 % average against 50 % -> ceil(4.8) = 5
        (3, 80, 50, 0.1, None, 5),
        # float noise: 10 x 0.7 is 7.000000000000001 and must not give 8
        (10, 70, 100, 0.1, None, 7),
        # the base is the pods that reported (HPA's ready pods)
        (10, 300, 100, 0.1, 5, 15),
        (10, 200, 100, 0.1, 5, 10),
        (10, 150, 100, 0.1, 4, 10),  # a reading above target never scales down
        (2, 50, 100, 0.1, 8, 2),  # nor one below target up
    ],
)
def test_proportional(
    current: int, value: float, target: float, tolerance: float, base: float | None, desired: int
) -> None:
    assert proportional(current, value, target, tolerance, base) == desired


@pytest.mark.parametrize(("x", "n"), [(7.000000000000001, 7), (7.0001, 8), (0.0, 0), (4.8, 5)])
def test_ceil_safe(x: float, n: int) -> None:
    assert ceil_safe(x) == n


# ---- threshold ---------------------------------------------------------------------------

CPU = {"strategy": "threshold", "metric": "cpu_percent", "upper": 80, "lower": 30}


@pytest.mark.parametrize(
    ("extra", "value", "current", "action", "desired"),
    [
        ({}, 90, 4, "up", 5),  # default add 1
        ({"scale_up": {"add": 3}}, 90, 4, "up", 7),
        ({"scale_up": {"add": "50%"}}, 90, 4, "up", 6),
        ({"scale_up": {"add": "50%"}}, 90, 1, "up", 2),  # at least one node
        ({"scale_up": {"set": 10}}, 90, 4, "up", 10),
        ({"scale_up": {"set": 3}}, 90, 4, "down", 3),  # set means set
        ({}, 20, 4, "down", 3),  # default remove 1
        ({"scale_down": {"remove": 2}}, 20, 4, "down", 2),
        ({"scale_down": {"remove": "25%"}}, 20, 8, "down", 6),
        ({"scale_down": {"remove": 5}}, 20, 3, "down", 0),  # never below zero
        ({"scale_down": {"set": 2}}, 20, 8, "down", 2),
        ({}, 50, 4, "hold", 4),
        ({}, 80, 4, "hold", 4),  # bounds are exclusive
        ({}, 30, 4, "hold", 4),
        ({"lower": None}, 95, 4, "up", 5),  # upper only
        ({"lower": None}, 5, 4, "abstain", None),  # ... has no opinion below it
        ({"upper": None}, 5, 4, "down", 3),  # lower only
        ({"upper": None}, 99, 4, "abstain", None),
    ],
)
def test_threshold(
    extra: dict[str, Any], value: float, current: int, action: str, desired: int | None
) -> None:
    body = {**CPU, **extra}
    result = threshold(check(**{k: v for k, v in body.items() if v is not None}),
                       CheckInput(value=value), current)  # fmt: skip
    assert (result.action, result.desired) == (action, desired)
    assert result.value == value
    assert "cpu_percent avg 1m" in result.reason


@pytest.mark.parametrize("inp", [CheckInput(), CheckInput(error="no samples of cpu in 1m")])
def test_threshold_without_a_value_is_an_error_vote(inp: CheckInput) -> None:
    result = threshold(check(**CPU), inp, 4)
    assert result.action == "error" and result.desired is None and not result.counts


# ---- target value ------------------------------------------------------------------------

RPS = {"strategy": "target_value", "metric": "request_rate", "target": 100}


@pytest.mark.parametrize(
    ("extra", "inp", "current", "tolerance", "desired"),
    [
        ({}, CheckInput(value=200), 3, 0.1, 6),
        ({}, CheckInput(value=50), 4, 0.1, 2),
        ({}, CheckInput(value=105), 4, 0.1, 4),
        ({"tolerance": 0.0}, CheckInput(value=105), 4, 0.1, 5),  # the check's own tolerance
        ({}, CheckInput(value=105), 4, 0.0, 5),  # the policy's
        ({}, CheckInput(value=300, nodes=2), 4, 0.1, 6),  # base: the reporting nodes
        ({"aggregation": "sum"}, CheckInput(value=1000, nodes=5), 5, 0.1, 10),
        ({"aggregation": "sum"}, CheckInput(value=1000), 4, 0.1, 10),  # base: current
        ({"aggregation": "sum"}, CheckInput(value=150, nodes=5), 5, 0.1, 2),
        ({}, CheckInput(value=500), 0, 0.1, 0),  # nothing to scale proportionally
    ],
)
def test_target_value(
    extra: dict[str, Any], inp: CheckInput, current: int, tolerance: float, desired: int
) -> None:
    result = target_value(check(**RPS, **extra), inp, current, tolerance)
    assert result.desired == desired


def test_target_value_error() -> None:
    assert target_value(check(**RPS), CheckInput(error="x"), 3, 0.1).action == "error"


# ---- schedule ----------------------------------------------------------------------------

OFFICE = {
    "strategy": "schedule",
    "timezone": "Europe/Paris",
    "periods": [
        {"start": "0 8 * * 1-5", "end": "0 19 * * 1-5", "min": 6, "max": 30},
        {"start": "0 22 * * *", "duration": "8h", "min": 10, "desired": 12},
        {"start": "0 * * * *", "duration": "30m", "max": 3},
    ],
}


@pytest.mark.parametrize(
    ("local", "period"),
    [
        ("2026-01-05 08:00:00", 0),  # Monday, the start second itself
        ("2026-01-05 12:40:00", 0),
        ("2026-01-05 18:59:59", 0),
        ("2026-01-05 19:00:00", 2),  # office over; the hourly half-hour begins
        ("2026-01-05 19:45:00", None),
        ("2026-01-10 12:10:00", 2),  # Saturday: no office hours
        ("2026-01-10 12:31:00", None),
        ("2026-01-05 23:10:00", 1),  # nightly, crossing midnight
        ("2026-01-06 05:59:00", 1),
        ("2026-01-06 06:00:00", 2),
        ("2026-07-06 08:30:00", 0),  # summer time: still 08:00 Paris
    ],
)
def test_active_period(local: str, period: int | None) -> None:
    found = active_period(check(**OFFICE), at(local, "Europe/Paris"))
    assert (found[0] if found else None) == period


def test_schedule_follows_local_time_across_dst() -> None:
    office = check(**OFFICE)
    winter, summer = at("2026-01-05 07:30:00"), at("2026-07-06 06:30:00")  # UTC
    assert active_period(office, winter)  # 08:30 in Paris (UTC+1)
    assert active_period(office, summer)  # 08:30 in Paris (UTC+2)
    assert not active_period(office, at("2026-07-06 05:30:00"))


@pytest.mark.parametrize(
    ("local", "current", "action", "desired", "low", "high"),
    [
        ("2026-01-05 10:00:00", 4, "abstain", None, 6, 30),  # bounds only, no vote
        ("2026-01-05 23:00:00", 4, "up", 12, 10, None),
        ("2026-01-05 23:00:00", 12, "hold", 12, 10, None),
        ("2026-01-05 19:45:00", 4, "abstain", None, None, None),
    ],
)
def test_schedule_vote(
    local: str, current: int, action: str, desired: int | None, low: int | None, high: int | None
) -> None:
    result = schedule(check(**OFFICE), CheckInput(), current, now=at(local, "Europe/Paris"))
    assert (result.action, result.desired, result.min, result.max) == (action, desired, low, high)


# ---- predictive --------------------------------------------------------------------------

T0 = 1_767_571_200.0  # a minute boundary


def ramp(minutes: int, start: float, slope: float) -> list[tuple[float, float]]:
    return [(T0 + 60 * i, start + slope * i) for i in range(minutes)]


FORECAST = {"strategy": "predictive", "metric": "request_rate", "target": 100, "horizon": "10m",
            "history": "1h", "min_history": "20m"}  # fmt: skip


def now_after(minutes: int) -> float:
    return T0 + 60 * minutes


@pytest.mark.parametrize(
    ("series", "extra", "current", "action", "desired"),
    [
        # rising 20/min from 400 over 30 min: at +10 min it is ~1190 -> 12 nodes, ahead of
        # the 10 a reactive rule would want now
        (ramp(30, 400, 20), {}, 10, "up", 12),
        (ramp(30, 1000, 0), {}, 10, "hold", 10),
        (ramp(30, 1000, 0), {}, 7, "up", 10),
        # falling: a forecast never scales in unless told to
        (ramp(30, 1000, -20), {}, 10, "abstain", None),
        (ramp(30, 1000, -20), {"scale_in": True}, 10, "down", 4),
        # not enough history: abstain, the reactive checks decide
        (ramp(10, 400, 20), {}, 4, "abstain", None),
        ([], {}, 4, "abstain", None),
    ],
)
def test_predictive_vote(
    series: list[tuple[float, float]],
    extra: dict[str, Any],
    current: int,
    action: str,
    desired: int | None,
) -> None:
    minutes = len(series)
    result = predictive(check(**FORECAST, **extra), CheckInput(series=series), current, 0.1,
                        now_after(minutes))  # fmt: skip
    assert (result.action, result.desired) == (action, desired), result.reason


def test_predictive_without_history_says_why() -> None:
    result = predictive(check(**FORECAST), CheckInput(series=ramp(10, 400, 20)), 4, 0.1,
                        now_after(10))  # fmt: skip
    assert "min_history 20m" in result.reason and "reactive" in result.reason


def test_predictive_shadow_records_but_does_not_count() -> None:
    result = predictive(check(**FORECAST, shadow=True), CheckInput(series=ramp(30, 400, 20)),
                        10, 0.1, now_after(30))  # fmt: skip
    assert result.shadow and result.desired == 12 and not result.counts
    assert result.reason.startswith("shadow:")
    assert result.memory is not None and len(result.memory["pending"]) == 1


def test_predictive_margin_adds_headroom_for_noise() -> None:
    noisy = [(t, v + (60 if i % 2 else -60)) for i, (t, v) in enumerate(ramp(30, 850, 0))]
    plain = predictive(check(**FORECAST), CheckInput(series=noisy), 9, 0.0, now_after(30))
    wide = predictive(check(**FORECAST, margin=1), CheckInput(series=noisy), 9, 0.0,
                      now_after(30))  # fmt: skip
    assert plain.desired == 9
    assert wide.desired == 10
    assert wide.details["spread"] == pytest.approx(60, rel=0.05)


def test_seasonal_forecast_sees_the_next_peak() -> None:
    day = 86400.0
    series = [(T0 + 60 * i, 1000 + 500 * math.sin(2 * math.pi * 60 * i / day))
              for i in range(1440)]  # fmt: skip
    now = T0 + day
    # a quarter of a day later the sine peaks at 1500
    ahead = forecast(series, now, day / 4, 60.0, season=day)
    assert ahead.peak == pytest.approx(1500, rel=0.01)
    flat = forecast(series, now, day / 4, 60.0)
    assert flat.peak < 1300  # a trend alone cannot see the cycle


@pytest.mark.parametrize(
    ("memory", "series", "pending", "count", "mape"),
    [
        (None, [], 0, 0, None),
        ({"pending": [[T0 + 120, 110.0]]}, [(T0, 100.0), (T0 + 60, 100.0)], 1, 0, None),
        ({"pending": [[T0 + 60, 110.0]]}, [(T0, 100.0), (T0 + 60, 100.0)], 0, 1, 0.1),
        ({"pending": [[T0 + 30, 90.0], [T0 + 90, 130.0]], "n": 2, "ape_sum": 0.2},
         [(T0, 100.0), (T0 + 60, 100.0), (T0 + 120, 100.0)], 0, 4, (0.2 + 0.1 + 0.3) / 4),
    ],
)  # fmt: skip
def test_score_forecasts(
    memory: dict[str, Any] | None,
    series: list[tuple[float, float]],
    pending: int,
    count: int,
    mape: float | None,
) -> None:
    book = score_forecasts(memory, series)
    assert len(book["pending"]) == pending and book["n"] == count
    if mape is not None:
        assert book["ape_sum"] / book["n"] == pytest.approx(mape)


def test_predictive_reports_its_error_once_forecasts_come_due() -> None:
    c = check(**FORECAST)
    series = ramp(40, 1000, 0)
    first = predictive(c, CheckInput(series=series[:25]), 10, 0.1, now_after(25))
    later = predictive(c, CheckInput(series=series), 10, 0.1, now_after(40), first.memory)
    assert later.details["scored"] == 1
    assert later.details["mape"] == pytest.approx(0.0, abs=1e-6)


def test_predictive_error_input() -> None:
    result = predictive(check(**FORECAST), CheckInput(error="redis down"), 3, 0.1, T0)
    assert result.action == "error" and result.reason == "redis down"


# ---- dispatch ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "inp", "action"),
    [
        (CPU, CheckInput(value=90), "up"),
        (RPS, CheckInput(value=50), "down"),
        (OFFICE, CheckInput(), "up"),  # 01:30 in Paris: the nightly period wants 12
        (FORECAST, CheckInput(series=ramp(30, 400, 20)), "up"),
    ],
)
def test_vote_dispatches_on_strategy(body: dict[str, Any], inp: CheckInput, action: str) -> None:
    result = vote(check(**body), inp, 10, 0.1, now_after(30))
    assert isinstance(result, Vote) and result.action == action


def test_vote_round_trips_through_a_dict() -> None:
    original = threshold(check(**CPU), CheckInput(value=90), 4)
    assert Vote.from_dict(original.to_dict()) == original
    assert "memory" not in original.to_dict()


def test_every_strategy_of_the_schema_has_a_function() -> None:
    assert set(STRATEGY_TABLE) == set(STRATEGIES)
    assert STRATEGIES == ("threshold", "target_value", "schedule", "predictive", "capacity")
