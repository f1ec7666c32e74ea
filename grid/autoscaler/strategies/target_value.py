"""The target_value strategy: the Kubernetes HPA proportional rule on a metric."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grid.autoscaler.policy import TargetValueCheck
from grid.autoscaler.votes import (
    CheckInput,
    Vote,
    describe,
    error_vote,
    fmt,
    make_vote,
    proportional,
)


def target_value(
    check: TargetValueCheck,
    inp: CheckInput,
    current: int,
    tolerance: float = 0.1,
    now: float = 0.0,
    memory: Mapping[str, Any] | None = None,
) -> Vote:
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
    seen = describe(check.metric, check.aggregation, check.window, value)
    reason = f"{seen}, target {fmt(check.target)}: ratio {ratio:.3f}" + (
        f" within tolerance {tol:g}" if desired == current else f" -> {desired}"
    )
    return make_vote(
        check.name, check.strategy, current, desired, reason, value=value,
        details={"ratio": round(ratio, 6), "tolerance": tol},
    )  # fmt: skip
