"""The decision engine: votes -> merge -> bounds -> step limits -> cooldown -> Decision.

1. Every check votes (its strategy, found by name in grid.autoscaler.strategies). A failing
   check abstains (`on_check_error: ignore`) or makes the whole evaluation hold (`fail`).
   Shadow votes are recorded, never counted.
2. Merge: the safest vote wins, the one that keeps the most capacity (the largest desired
   size). A check that holds therefore vetoes scale-in: every check must agree to shrink.
   No counted vote: hold.
3. Bounds: the policy's min/max, replaced by those of active schedule periods (the largest
   min and max among them; if min > max, max rises to min: capacity wins).
4. Step limits: at most `step_limits.up`/`.down` nodes (a count or a percent of the current
   size) per evaluation. They apply to bound corrections too, so a raised min ramps.
5. Cooldown, per direction: no scale-up sooner than `cooldown.scale_up` after the last
   scale-up, unless it is a larger step than that one (a small step - a forecast's, at the
   onset of a surge - does not delay the larger one the measured load asks for); no
   scale-down sooner than `cooldown.scale_down` after the last scaling of either direction
   (a pool that just grew is not shrunk straight away), and a scale-down goes no lower than
   the largest merged vote of the last `cooldown.scale_down` (the Kubernetes HPA's
   stabilisation window: capacity is released only once no check has wanted it for that
   long, which is what stops flapping on noisy load; an evaluation where no check voted is
   no vote). A move that brings a pool back inside its bounds ignores the cooldown.

The engine is pure: the caller passes the inputs and the pool's state and gets a Decision
(JSON-serialisable, it carries every step) and, via :func:`next_state`, the new state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from grid.autoscaler.metrics import HISTORY_STEP, WindowStats
from grid.autoscaler.policy import (
    CapacityCheck,
    PoolPolicy,
    PredictiveCheck,
    ScheduleCheck,
    step_amount,
)
from grid.autoscaler.strategies import StrategyCheck, vote
from grid.autoscaler.votes import CheckInput, Vote, error_vote
from grid.core.durations import format_duration


class MetricsSource(Protocol):
    """Where checks read metrics: MetricsStore (Redis) or MemoryMetrics (backtests)."""

    def window(
        self, pool: str, metric: str, window: float, now: float, with_p95: bool = False
    ) -> WindowStats | None: ...

    def series(
        self, pool: str, metric: str, start: float, end: float
    ) -> list[tuple[float, float]]: ...


@dataclass
class PoolState:
    """The autoscaler's memory of a pool between evaluations."""

    last_eval: float | None = None
    last_up: float | None = None
    last_down: float | None = None
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)  # per predictive check
    recent: list[tuple[float, int]] = field(default_factory=list)  # (time, merged vote)
    last_up_step: int | None = None  # nodes the last scale-up added

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolState:
        return cls(
            last_eval=data.get("last_eval"),
            last_up=data.get("last_up"),
            last_down=data.get("last_down"),
            memory=dict(data.get("memory") or {}),
            recent=[(float(t), int(n)) for t, n in data.get("recent") or []],
            last_up_step=None if data.get("last_up_step") is None else int(data["last_up_step"]),
        )


@dataclass
class Decision:
    """One evaluation of one pool, with everything needed to explain it."""

    pool: str
    ts: float
    current: int
    desired: int
    action: Literal["up", "down", "hold"]
    reason: str
    votes: list[Vote]
    merged: int
    merge: str
    bounds: dict[str, Any]
    clamps: list[dict[str, Any]]
    cooldown: dict[str, Any]
    dry_run: bool = False
    applied: bool = False
    error: str | None = None
    memory: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    recent: list[tuple[float, int]] = field(default_factory=list, repr=False)

    @property
    def changed(self) -> bool:
        return self.desired != self.current

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the predictive memory stays in the pool state, not in the record)."""
        hidden = ("votes", "memory", "recent")
        data = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in hidden}
        data["votes"] = [v.to_dict() for v in self.votes]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k != "votes"}
        fields["recent"] = [tuple(r) for r in fields.get("recent", [])]
        fields["votes"] = [Vote.from_dict(v) for v in data.get("votes", [])]
        return cls(**fields)


def collect_inputs(source: MetricsSource, policy: PoolPolicy, now: float) -> dict[str, CheckInput]:
    """Read what each check needs; a failed read becomes that check's error, not an exception."""
    inputs: dict[str, CheckInput] = {}
    histories: dict[str, list[tuple[float, float]]] = {}  # one read per metric
    longest: dict[str, float] = {}
    for check in policy.checks:
        if isinstance(check, PredictiveCheck):
            longest[check.metric] = max(longest.get(check.metric, 0.0), check.history)
    for check in policy.checks:
        if isinstance(check, ScheduleCheck):
            inputs[check.name] = CheckInput()
            continue
        try:
            if isinstance(check, PredictiveCheck):
                if check.metric not in histories:
                    start = now - longest[check.metric]
                    histories[check.metric] = source.series(policy.pool, check.metric, start, now)
                cut = now - check.history
                series = [p for p in histories[check.metric] if p[0] > cut - HISTORY_STEP]
                inputs[check.name] = CheckInput(series=series)
                continue
            if isinstance(check, CapacityCheck):  # the pool total over its window
                window, aggregation = check.window or policy.evaluation_interval, "sum"
            else:
                window, aggregation = check.window, check.aggregation
            stats = source.window(policy.pool, check.metric, window, now, aggregation == "p95")
        except Exception as exc:  # noqa: BLE001 - any read failure is this check's error
            inputs[check.name] = CheckInput(error=f"reading {check.metric}: {exc}")
            continue
        if stats is None:
            shown = format_duration(window)
            inputs[check.name] = CheckInput(error=f"no samples of {check.metric} in {shown}")
        else:
            inputs[check.name] = CheckInput(value=stats.get(aggregation), nodes=stats.nodes)
    return inputs


def evaluate(
    policy: PoolPolicy,
    current: int,
    inputs: Mapping[str, CheckInput],
    state: PoolState,
    now: float | None = None,
) -> Decision:
    """Decide the pool's size. Pure: no I/O, no clock unless `now` is omitted."""
    now = time.time() if now is None else now
    votes = [_vote(check, inputs, current, policy, state, now) for check in policy.checks]
    memory = {v.check: v.memory for v in votes if v.memory is not None}
    errors = [v for v in votes if v.action == "error"]
    lo, hi, bounds_source = _bounds(policy, votes)
    bounds = {"min": lo, "max": hi, "source": bounds_source}
    cooldown = _cooldown_info(policy, state, now)

    def decision(desired: int, reason: str, merged: int, merge: str, **kw: Any) -> Decision:
        action: Literal["up", "down", "hold"] = (
            "up" if desired > current else "down" if desired < current else "hold"
        )
        return Decision(
            pool=policy.pool, ts=now, current=current, desired=desired, action=action,
            reason=reason, votes=votes, merged=merged, merge=merge, bounds=bounds,
            cooldown=cooldown, dry_run=policy.dry_run, memory=memory, **kw,
        )  # fmt: skip

    if errors and policy.on_check_error == "fail":
        names = ", ".join(f"{v.check} ({v.reason})" for v in errors)
        reason = f"hold at {current}: check failed: {names}; on_check_error: fail"
        return decision(current, reason, current, "not merged: a check failed", clamps=[])

    counted = [v for v in votes if v.counts]
    if counted:
        winner = max(counted, key=lambda v: v.desired or 0)
        merged = winner.desired if winner.desired is not None else current
        others = ", ".join(f"{v.check}={v.desired}" for v in counted)
        merge = f"{winner.check} wins with {merged} (largest of {others})"
        why = f"{winner.check}: {winner.reason}"
    else:
        merged = current
        merge = f"no check voted: hold at {current}"
        why = "no check voted"

    window = policy.cooldown.scale_down
    recent = [(t, n) for t, n in state.recent if t > now - window]
    clamps: list[dict[str, Any]] = []
    target = merged
    if target < lo or target > hi:
        bounded = min(max(target, lo), hi)
        rule = "min" if target < lo else "max"
        clamps.append({"rule": rule, "from": target, "to": bounded, "why": f"{rule} {bounded}"})
        target = bounded
    if target < current and recent:
        floor = min(current, max(lo, min(hi, max(n for _, n in recent))))
        if target < floor:
            why_floor = f"largest vote of the last {format_duration(window)}"
            clamps.append({"rule": "stabilization", "from": target, "to": floor, "why": why_floor})
            target = floor
    if counted:  # an evaluation where no check voted says nothing about the capacity needed
        recent.append((now, merged))
    target = _step_limit(policy, current, target, clamps)

    direction = "up" if target > current else "down" if target < current else None
    cooldown["direction"] = direction
    if direction is not None:
        remaining = cooldown[f"{direction}_remaining"]
        outside = current < lo if direction == "up" else current > hi
        # A scale-up cooldown holds back only a step no larger than the one that started it:
        # a small (forecast) step cannot use it up against a larger measured gap.
        larger = (
            direction == "up"
            and state.last_up_step is not None
            and target - current > state.last_up_step
        )
        cooldown["larger_step"] = larger
        if remaining > 0 and not outside and not larger:
            cooldown["blocked"] = True
            reason = (
                f"hold at {current}: would scale {direction} to {target} ({why}), but "
                f"scale-{direction} cooldown has {format_duration(remaining)} left"
            )
            return decision(current, reason, merged, merge, clamps=clamps, recent=recent)
    notes = "".join(f"; {c['why']}" for c in clamps)
    if direction is None:
        reason = f"hold at {current}: {why}{notes}"
    else:
        same_way = (merged - current) * (target - current) > 0
        cause = why if same_way else f"outside bounds [{lo}, {hi}]"
        reason = f"scale {direction} {current} -> {target}: {cause}{notes}"
    return decision(target, reason, merged, merge, clamps=clamps, recent=recent)


def _vote(
    check: StrategyCheck,
    inputs: Mapping[str, CheckInput],
    current: int,
    policy: PoolPolicy,
    state: PoolState,
    now: float,
) -> Vote:
    inp = inputs.get(check.name, CheckInput(error="no input collected"))
    try:
        return vote(check, inp, current, policy.tolerance, now, state.memory.get(check.name))
    except Exception as exc:  # noqa: BLE001 - a broken check must not break the others
        return error_vote(check.name, check.strategy, f"{type(exc).__name__}: {exc}")


def _bounds(policy: PoolPolicy, votes: list[Vote]) -> tuple[int, int, str]:
    lo, hi, source = policy.min, policy.max, "policy"
    overriding = [v for v in votes if not v.shadow and (v.min is not None or v.max is not None)]
    if overriding:
        mins = [v.min for v in overriding if v.min is not None]
        maxes = [v.max for v in overriding if v.max is not None]
        lo = max(mins) if mins else lo
        hi = max(maxes) if maxes else hi
        hi = max(hi, lo)
        source = "schedule: " + ", ".join(v.check for v in overriding)
    return lo, hi, source


def _step_limit(policy: PoolPolicy, current: int, target: int, clamps: list[dict[str, Any]]) -> int:
    limits = policy.step_limits
    if target > current and limits.up is not None:
        limit = step_amount(limits.up, current)
        if target - current > limit:
            clamps.append({"rule": "step_up", "from": target, "to": current + limit,
                           "why": f"step limit up {limits.up}"})  # fmt: skip
            return current + limit
    if target < current and limits.down is not None:
        limit = step_amount(limits.down, current)
        if current - target > limit:
            clamps.append({"rule": "step_down", "from": target, "to": current - limit,
                           "why": f"step limit down {limits.down}"})  # fmt: skip
            return current - limit
    return target


def _ms_up(seconds: float) -> float:
    """Seconds left, rounded *up* to the millisecond: any time left still blocks (> 0)."""
    return math.ceil(seconds * 1000) / 1000 if seconds > 0 else 0.0


def _cooldown_info(policy: PoolPolicy, state: PoolState, now: float) -> dict[str, Any]:
    last_any = max((t for t in (state.last_up, state.last_down) if t is not None), default=None)
    up_left = 0.0 if state.last_up is None else policy.cooldown.scale_up - (now - state.last_up)
    down_left = 0.0 if last_any is None else policy.cooldown.scale_down - (now - last_any)
    return {
        "direction": None,
        "blocked": False,
        "up_remaining": _ms_up(up_left),
        "down_remaining": _ms_up(down_left),
        "last_up": state.last_up,
        "last_down": state.last_down,
    }


def next_state(state: PoolState, decision: Decision, applied: bool) -> PoolState:
    """The pool state after `decision`; scale times move only when the change was applied."""
    memory = {**state.memory, **decision.memory}
    recent = decision.recent if decision.recent else state.recent
    new = PoolState(
        state.last_eval, state.last_up, state.last_down, memory, recent, state.last_up_step
    )
    new.last_eval = decision.ts
    if applied and decision.action == "up":
        new.last_up = decision.ts
        new.last_up_step = decision.desired - decision.current
    elif applied and decision.action == "down":
        new.last_down = decision.ts
    return new


def format_decision(d: Decision | Mapping[str, Any]) -> str:
    """A few readable lines for `grid policy explain`."""
    dec = d if isinstance(d, Decision) else Decision.from_dict(d)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(dec.ts))
    state = "dry run" if dec.dry_run else "applied" if dec.applied else "not applied"
    if dec.changed:
        head = f"{stamp}Z {dec.pool}: {dec.action} {dec.current} -> {dec.desired} ({state})"
    else:
        head = f"{stamp}Z {dec.pool}: hold at {dec.current}"
    lines = [head]
    width = max((len(v.check) for v in dec.votes), default=5)
    for v in dec.votes:
        shown = "-" if v.desired is None else str(v.desired)
        flag = " [shadow]" if v.shadow else ""
        lines.append(f"  vote  {v.check:<{width}}  {v.action:<7} {shown:>4}  {v.reason}{flag}")
    bounds = dec.bounds
    lines.append(f"  merge    {dec.merge}")
    lines.append(f"  bounds   min {bounds['min']}, max {bounds['max']} ({bounds['source']})")
    clamps = ", ".join(f"{c['why']}: {c['from']} -> {c['to']}" for c in dec.clamps) or "none"
    lines.append(f"  clamps   {clamps}")
    cd = dec.cooldown
    cool = "blocked" if cd.get("blocked") else "clear"
    lines.append(
        f"  cooldown {cool} (up {format_duration(cd.get('up_remaining', 0))} left,"
        f" down {format_duration(cd.get('down_remaining', 0))} left)"
    )
    lines.append(f"  reason   {dec.reason}")
    if dec.error:
        lines.append(f"  error    {dec.error}")
    return "\n".join(lines)
