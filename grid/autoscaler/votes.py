"""What a strategy returns and the rules several strategies share.

A strategy reads a :class:`CheckInput` (the check's aggregate over its window, or a history
series) and returns a :class:`Vote`: a desired size (or none, to abstain) with a reason.
This module imports no strategy, so every strategy module and the engine can import it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

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
        """JSON-ready; `memory` (a check's book between evaluations) lives in the pool state."""
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


def fmt(value: float) -> str:
    """A metric value in a reason: four significant digits."""
    return f"{value:.4g}"


def describe(metric: str, aggregation: str, window: float, value: float) -> str:
    """`cpu_percent avg 2m = 88.5`: what a metric check read, for its reason."""
    return f"{metric} {aggregation} {format_duration(window)} = {fmt(value)}"
