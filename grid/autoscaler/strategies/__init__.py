"""Strategies: pure functions of (check config, metrics, current size, now) -> a Vote.

Like nomad-autoscaler's strategy plugins, a strategy never reads Redis or the clock: the
engine hands it a :class:`~grid.autoscaler.votes.CheckInput` (the check's aggregate over its
window, or a history series), the current size, the pool's tolerance, the time and the
check's memory of earlier evaluations. One module per strategy; the engine finds them by
name in :data:`STRATEGIES`, so adding a strategy is its schema in ``policy.py`` and one line
here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from grid.autoscaler.policy import (
    CapacityCheck,
    PredictiveCheck,
    ScheduleCheck,
    TargetValueCheck,
    ThresholdCheck,
)
from grid.autoscaler.strategies.capacity import capacity
from grid.autoscaler.strategies.predictive import predictive
from grid.autoscaler.strategies.schedule import schedule
from grid.autoscaler.strategies.target_value import target_value
from grid.autoscaler.strategies.threshold import threshold
from grid.autoscaler.votes import CheckInput, Vote

StrategyCheck = ThresholdCheck | TargetValueCheck | ScheduleCheck | PredictiveCheck | CapacityCheck


class Strategy(Protocol):
    """The one signature every strategy has; `memory` is what it kept from the last vote."""

    def __call__(
        self,
        check: Any,
        inp: CheckInput,
        current: int,
        tolerance: float,
        now: float,
        memory: Mapping[str, Any] | None,
    ) -> Vote: ...


STRATEGIES: dict[str, Strategy] = {
    "threshold": threshold,
    "target_value": target_value,
    "schedule": schedule,
    "predictive": predictive,
    "capacity": capacity,
}


def vote(
    check: StrategyCheck,
    inp: CheckInput,
    current: int,
    tolerance: float,
    now: float,
    memory: Mapping[str, Any] | None = None,
) -> Vote:
    """Run the check's strategy, found by name in :data:`STRATEGIES`."""
    return STRATEGIES[check.strategy](check, inp, current, tolerance, now, memory)
