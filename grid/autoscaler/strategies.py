"""Strategies: pure functions of (metrics, current size, check config, now) -> a Vote.

Like nomad-autoscaler's strategy plugins, a strategy never reads Redis or the clock: the
engine hands it a :class:`CheckInput` (the check's aggregate over its window, or a history
series) and the time. A vote carries a desired size (or none, to abstain) and a reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from grid.autoscaler.policy import (
    Period,
    PredictiveCheck,
    ScheduleCheck,
    TargetValueCheck,
    ThresholdCheck,
    step_amount,
)
from grid.core.durations import format_duration

Action = Literal["up", "down", "hold", "abstain", "error"]


@dataclass(frozen=True)
class CheckInput:
    """What the engine read for one check: an aggregate, a history series, or an error."""

    value: float | None = None
    nodes: float | None = None  # nodes reporting in the window (time average)
    series: Sequence[tuple[float, float]] = ()  # (bucket start, pool total), oldest first
    error: str | None = None


@dataclass(frozen=True)
class Vote:
    """One check's opinion. `desired` None means abstain; `min`/`max` override the bounds."""

    check: str
    strategy: str
    action: Action
    desired: int | None
    reason: str
    value: float | None = None
    min: int | None = None
    max: int | None = None
    shadow: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def counts(self) -> bool:
        """Whether the vote takes part in the merge."""
        return self.desired is not None and not self.shadow

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; `memory` (a predictive check's forecast book) lives in the pool state."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "memory"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Vote:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def ceil_safe(x: float) -> int:
    """ceil() that ignores float noise: 10 x 0.7 = 7.000000000000001 must give 7, not 8."""
    return math.ceil(round(x, 9))


def proportional(
    current: int, value: float, target: float, tolerance: float, base: float | None = None
) -> int:
    """The Kubernetes HPA rule: ceil(base x value / target), or `current` within tolerance.

    `base` is the number of nodes that produced `value` (HPA's ready pods; default `current`).
    The result never moves against the metric: a reading above target never scales down
    (HPA does the same when not-ready pods are counted), nor one below target up.
    """
    ratio = value / target
    if abs(ratio - 1.0) <= tolerance + 1e-9:  # inclusive: 110 against 100 is within 0.1
        return current
    desired = ceil_safe((current if base is None else base) * ratio)
    if (ratio > 1 and desired < current) or (ratio < 1 and desired > current):
        return current
    return desired


def make_vote(
    check: str,
    strategy: str,
    current: int,
    desired: int | None,
    reason: str,
    **extra: Any,
) -> Vote:
    """A vote whose action (up/down/hold/abstain) follows from desired vs current."""
    if desired is None:
        action: Action = "abstain"
    elif desired > current:
        action = "up"
    elif desired < current:
        action = "down"
    else:
        action = "hold"
    return Vote(check, strategy, action, desired, reason, **extra)


def error_vote(check: str, strategy: str, message: str) -> Vote:
    return Vote(check, strategy, "error", None, message)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _describe(check: ThresholdCheck | TargetValueCheck, value: float) -> str:
    return f"{check.metric} {check.aggregation} {format_duration(check.window)} = {_fmt(value)}"


# ---- threshold -----------------------------------------------------------------------------


def threshold(check: ThresholdCheck, inp: CheckInput, current: int) -> Vote:
    """Above `upper`: scale_up (add count/percent, or set); below `lower`: scale_down; in
    between: hold. A one-sided threshold (upper or lower only) abstains on the other side."""
    if inp.error is not None or inp.value is None:
        return error_vote(check.name, check.strategy, inp.error or "no value")
    value = inp.value
    seen = _describe(check, value)
    if check.upper is not None and value > check.upper:
        up = check.scale_up
        if up.set is not None:
            desired, how = up.set, f"set {up.set}"
        else:
            amount = up.add if up.add is not None else 1
            desired, how = current + step_amount(amount, current), f"add {amount}"
        reason = f"{seen} > upper {_fmt(check.upper)}: {how}"
    elif check.lower is not None and value < check.lower:
        down = check.scale_down
        if down.set is not None:
            desired, how = down.set, f"set {down.set}"
        else:
            amount = down.remove if down.remove is not None else 1
            desired, how = max(0, current - step_amount(amount, current)), f"remove {amount}"
        reason = f"{seen} < lower {_fmt(check.lower)}: {how}"
    elif check.upper is not None and check.lower is not None:
        desired = current
        reason = f"{seen} within [{_fmt(check.lower)}, {_fmt(check.upper)}]"
    else:  # one-sided: no opinion on the other direction, so no veto on it either
        desired = None
        if check.upper is not None:
            reason = f"{seen} <= upper {_fmt(check.upper)} (no lower bound: no opinion)"
        else:
            reason = f"{seen} >= lower {_bound(check.lower)} (no upper bound: no opinion)"
    return make_vote(check.name, check.strategy, current, desired, reason, value=value)


def _bound(value: float | None) -> str:
    return "-" if value is None else _fmt(value)


# ---- target value --------------------------------------------------------------------------


def target_value(check: TargetValueCheck, inp: CheckInput, current: int, tolerance: float) -> Vote:
    """Proportional rule; with `sum` the value is divided by the reporting nodes first."""
    if inp.error is not None or inp.value is None:
        return error_vote(check.name, check.strategy, inp.error or "no value")
    tol = check.tolerance if check.tolerance is not None else tolerance
    base = inp.nodes if inp.nodes else None
    value = inp.value
    if base is None and current == 0:
        return make_vote(
            check.name, check.strategy, current, current,
            "no running nodes: the proportional rule needs at least one", value=value,
        )  # fmt: skip
    per_node = value / (base or current) if check.aggregation == "sum" else value
    desired = proportional(current, per_node, check.target, tol, base)
    ratio = per_node / check.target
    reason = f"{_describe(check, value)}, target {_fmt(check.target)}: ratio {ratio:.3f}" + (
        f" within tolerance {tol:g}" if desired == current else f" -> {desired}"
    )
    return make_vote(
        check.name, check.strategy, current, desired, reason, value=value,
        details={"ratio": round(ratio, 6), "tolerance": tol},
    )  # fmt: skip


# ---- schedule ------------------------------------------------------------------------------


def active_period(check: ScheduleCheck, now: float) -> tuple[int, Period] | None:
    """The first period (in file order) active at `now`, in the check's time zone."""
    from zoneinfo import ZoneInfo  # noqa: PLC0415

    from croniter import croniter  # noqa: PLC0415

    # +1 microsecond so a period is active from its exact start second on.
    local = datetime.fromtimestamp(now, ZoneInfo(check.timezone)) + timedelta(microseconds=1)
    for index, period in enumerate(check.periods):
        began: datetime = croniter(period.start, local).get_prev(datetime)
        if period.end is not None:
            ended: datetime = croniter(period.end, local).get_prev(datetime)
            if began > ended:
                return index, period
        elif period.duration is not None and local < began + timedelta(seconds=period.duration):
            return index, period
    return None


def schedule(check: ScheduleCheck, current: int, now: float) -> Vote:
    """While a period is active: its min/max replace the policy's, its desired is a vote."""
    found = active_period(check, now)
    if found is None:
        return make_vote(check.name, check.strategy, current, None, "no period active")
    index, period = found
    parts = [f"{k} {v}" for k, v in (("min", period.min), ("max", period.max)) if v is not None]
    if period.desired is not None:
        parts.append(f"desired {period.desired}")
    reason = f"period {index} ({period.start} {check.timezone}) active: " + ", ".join(parts)
    return make_vote(
        check.name, check.strategy, current, period.desired, reason,
        min=period.min, max=period.max, details={"period": index},
    )  # fmt: skip


# ---- dispatch ------------------------------------------------------------------------------

StrategyCheck = ThresholdCheck | TargetValueCheck | ScheduleCheck | PredictiveCheck


def vote(
    check: StrategyCheck,
    inp: CheckInput,
    current: int,
    tolerance: float,
    now: float,
    memory: Mapping[str, Any] | None = None,
) -> Vote:
    """Run the check's strategy. `memory` is the predictive check's record of past forecasts."""
    if isinstance(check, ThresholdCheck):
        return threshold(check, inp, current)
    if isinstance(check, TargetValueCheck):
        return target_value(check, inp, current, tolerance)
    if isinstance(check, ScheduleCheck):
        return schedule(check, current, now)
    from grid.autoscaler.predictive import predictive  # noqa: PLC0415 - pandas is heavy

    return predictive(check, inp, current, tolerance, now, memory)
