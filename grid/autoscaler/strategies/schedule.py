"""The schedule strategy: time-based bounds and desired sizes (cron periods in a time zone)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from grid.autoscaler.policy import Period, ScheduleCheck
from grid.autoscaler.votes import CheckInput, Vote, make_vote


def active_period(check: ScheduleCheck, now: float) -> tuple[int, Period] | None:
    """The first period (in file order) active at `now`, in the check's time zone."""
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


def schedule(
    check: ScheduleCheck,
    inp: CheckInput,
    current: int,
    tolerance: float = 0.0,
    now: float = 0.0,
    memory: Mapping[str, Any] | None = None,
) -> Vote:
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
