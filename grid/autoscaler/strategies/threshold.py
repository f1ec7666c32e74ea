"""The threshold strategy: step scaling above `upper` and below `lower`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grid.autoscaler.policy import ThresholdCheck, step_amount
from grid.autoscaler.votes import CheckInput, Vote, describe, error_vote, fmt, make_vote


def threshold(
    check: ThresholdCheck,
    inp: CheckInput,
    current: int,
    tolerance: float = 0.0,
    now: float = 0.0,
    memory: Mapping[str, Any] | None = None,
) -> Vote:
    """Above `upper`: scale_up (add count/percent, or set); below `lower`: scale_down; in
    between: hold. A one-sided threshold (upper or lower only) abstains on the other side."""
    if inp.error is not None or inp.value is None:
        return error_vote(check.name, check.strategy, inp.error or "no value")
    value = inp.value
    seen = describe(check.metric, check.aggregation, check.window, value)
    if check.upper is not None and value > check.upper:
        up = check.scale_up
        if up.set is not None:
            desired, how = up.set, f"set {up.set}"
        else:
            amount = up.add if up.add is not None else 1
            desired, how = current + step_amount(amount, current), f"add {amount}"
        reason = f"{seen} > upper {fmt(check.upper)}: {how}"
    elif check.lower is not None and value < check.lower:
        down = check.scale_down
        if down.set is not None:
            desired, how = down.set, f"set {down.set}"
        else:
            amount = down.remove if down.remove is not None else 1
            desired, how = max(0, current - step_amount(amount, current)), f"remove {amount}"
        reason = f"{seen} < lower {fmt(check.lower)}: {how}"
    elif check.upper is not None and check.lower is not None:
        desired = current
        reason = f"{seen} within [{fmt(check.lower)}, {fmt(check.upper)}]"
    else:  # one-sided: no opinion on the other direction, so no veto on it either
        desired = None
        if check.upper is not None:
            reason = f"{seen} <= upper {fmt(check.upper)} (no lower bound: no opinion)"
        else:
            lower = "-" if check.lower is None else fmt(check.lower)
            reason = f"{seen} >= lower {lower} (no upper bound: no opinion)"
    return make_vote(check.name, check.strategy, current, desired, reason, value=value)
