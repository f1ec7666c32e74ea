"""Backtests: replay a metric trace through a policy (or a baseline) in simulated time.

The trace is a CSV of ``timestamp,value[,metric]`` rows (a header row is optional; timestamps
are unix seconds or ISO 8601). ``value`` is the pool's total load of the metric at that time
(total requests/s, or total CPU % - 250 is two and a half busy nodes); a row with no metric
is the load of the metric the backtest measures capacity on. The load holds until the next
row, at any resolution (one row a second or a minute).

What the live grid does is simulated: every `step` (the agents' sampling period, 5 s) each
ready node reports the mean of its equal share of the load over that step, so an evaluation
reads the average of the samples in its window; a `dry_run` policy decides and never acts; a
new node is ready `spin_up` after the scale-up, a scale-down is immediate (pending nodes go
first). The policy runs through the very engine the master uses (`collect_inputs` on an
in-memory metrics source, `evaluate`, `next_state`).

Reported: node-minutes (every allocated node, ready or not), minutes under capacity (the
time, to the trace's resolution, when the load exceeds what the ready nodes can serve),
direction changes (a scale-up after a scale-down or the reverse: the flapping count) and
scaling actions. Baselines: the Kubernetes HPA (hpa.py; `instant` or `avg60` metric), the
Nomad target-value strategy and perfect foresight. sweep.py draws the HPA cost curve;
replay.py is the command line (`grid policy backtest`).
"""

from __future__ import annotations

import bisect
import csv
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from grid.autoscaler.engine import PoolState, collect_inputs, evaluate, next_state
from grid.autoscaler.hpa import HPA
from grid.autoscaler.metrics import MemoryMetrics, uniform_partial
from grid.autoscaler.policy import (
    CapacityCheck,
    MetricChecks,
    PoolPolicy,
    PredictiveCheck,
    TargetValueCheck,
    ThresholdCheck,
)
from grid.autoscaler.votes import ceil_safe
from grid.core.errors import ConfigError

ALL_METRICS = ""  # the metric of a trace row with none: every metric the policy reads


@dataclass
class Trace:
    """Per metric, (time, total load) points sorted by time."""

    name: str
    points: dict[str, list[tuple[float, float]]]

    @property
    def start(self) -> float:
        return min(p[0][0] for p in self.points.values())

    @property
    def end(self) -> float:
        """When the trace stops: its last point plus the spacing before it (that point's span)."""
        return max(p[-1][0] + (p[-1][0] - p[-2][0] if len(p) > 1 else 60.0)
                   for p in self.points.values())  # fmt: skip


def load_trace(path: str | Path, name: str | None = None) -> Trace:
    """Read a `timestamp,value[,metric]` CSV; ConfigError names the first bad line."""
    points: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].startswith("#"):
                continue
            if number == 1 and row[0].strip().lower() in ("timestamp", "ts", "time"):
                continue
            try:
                ts, value = _timestamp(row[0]), float(row[1])
            except (IndexError, ValueError):
                raise ConfigError(f"{path}:{number}: expected timestamp,value[,metric]") from None
            metric = row[2].strip() if len(row) > 2 else ALL_METRICS
            points.setdefault(metric, []).append((ts, value))
    if not points:
        raise ConfigError(f"{path}: no data rows")
    for series in points.values():
        series.sort()
    return Trace(name or Path(path).stem, points)


def _timestamp(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---- controllers -------------------------------------------------------------------------


class Controller(Protocol):
    name: str
    interval: float

    def decide(self, now: float, current: int, source: MemoryMetrics) -> tuple[int, str]: ...


class PolicyController:
    """A policy through the production engine, with its state kept in memory. A `dry_run`
    policy is simulated as the live grid runs it: decided and recorded, never applied."""

    def __init__(self, policy: PoolPolicy) -> None:
        self.policy = policy
        self.name = policy.pool
        self.interval = policy.evaluation_interval
        self.state = PoolState()

    def decide(self, now: float, current: int, source: MemoryMetrics) -> tuple[int, str]:
        inputs = collect_inputs(source, self.policy, now)
        decision = evaluate(self.policy, current, inputs, self.state, now)
        applied = decision.changed and not self.policy.dry_run
        self.state = next_state(self.state, decision, applied=applied)
        return (decision.desired if applied else current), decision.reason


HPA_METRICS = ("instant", "avg60")
HPA_WINDOWS = {"instant": None, "avg60": 60.0}  # instant: the samples of the last sync period


class HPAController:
    """The Kubernetes HPA baseline. `metric`: `instant`, the per-sync value the documentation
    describes (the average of the last sync period's samples), or `avg60`, a 1-minute average."""

    def __init__(self, hpa: HPA, pool: str, metric: str, variant: str = "avg60") -> None:
        self.hpa = hpa
        self.name = "hpa"
        self.interval = hpa.sync_period
        self.pool = pool
        self.metric = metric
        self.window = HPA_WINDOWS[variant] or hpa.sync_period

    def decide(self, now: float, current: int, source: MemoryMetrics) -> tuple[int, str]:
        stats = source.window(self.pool, self.metric, self.window, now)
        if stats is None:
            return max(current, self.hpa.min_replicas), "no metrics"
        desired = self.hpa.recommend(now, current, stats.avg, stats.nodes)
        return desired, f"hpa: avg {stats.avg:.4g} target {self.hpa.target:g}"


class NomadController:
    """nomad-autoscaler's target-value strategy: desired = ceil(count x value / target) unless
    |value / target - 1| <= threshold (0.01); the value is the per-node average over the
    evaluation interval (10 s); a 5-minute cooldown after every scaling action."""

    def __init__(
        self, target: float, pool: str, metric: str, low: int, high: int,
        interval: float = 10.0, cooldown: float = 300.0, threshold: float = 0.01,
    ) -> None:  # fmt: skip
        self.name = "nomad"
        self.target, self.pool, self.metric = target, pool, metric
        self.low, self.high = low, high
        self.interval, self.cooldown, self.threshold = interval, cooldown, threshold
        self.last_scaled = -math.inf

    def decide(self, now: float, current: int, source: MemoryMetrics) -> tuple[int, str]:
        if now - self.last_scaled < self.cooldown:
            return current, "nomad: cooldown"
        stats = source.window(self.pool, self.metric, self.interval, now)
        if stats is None:
            return max(current, self.low), "no metrics"
        factor = stats.avg / self.target
        desired = current if abs(factor - 1) <= self.threshold else ceil_safe(current * factor)
        desired = max(self.low, min(self.high, desired))
        if desired != current:
            self.last_scaled = now
        return desired, f"nomad: avg {stats.avg:.4g} target {self.target:g}"


# ---- simulation --------------------------------------------------------------------------


@dataclass
class SimConfig:
    capacity: float  # per-node load a node can serve; above it, the time is under capacity
    metric: str  # the metric whose load decides "under capacity"
    step: float = 5.0  # simulated seconds per tick (the agents' sampling period)
    spin_up: float = 60.0  # seconds from scale-up to a ready node
    initial: int | None = None  # starting size (default: what the first load needs)


@dataclass
class BacktestReport:
    controller: str
    trace: str
    minutes: float
    node_minutes: float
    minutes_under_capacity: float
    direction_changes: int
    scale_actions: int
    max_nodes: int
    spin_up: float = 60.0
    actions: list[tuple[float, int, int, str]] = field(default_factory=list)
    timeline: list[tuple[float, float, int, int]] = field(default_factory=list, repr=False)

    def to_dict(self, with_timeline: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_timeline:
            data.pop("timeline")
        return data


def default_sim_config(policy: PoolPolicy, **overrides: Any) -> SimConfig:
    """Capacity and metric from the policy: the first capacity check's `capacity`, else the
    first target_value/predictive target, else the first threshold's upper bound."""
    for check in policy.checks:
        if isinstance(check, CapacityCheck):
            return SimConfig(**{"capacity": check.capacity, "metric": check.metric, **overrides})
    for check in policy.checks:
        if isinstance(check, TargetValueCheck | PredictiveCheck):
            return SimConfig(**{"capacity": check.target, "metric": check.metric, **overrides})
    for check in policy.checks:
        if isinstance(check, ThresholdCheck) and check.upper is not None:
            return SimConfig(**{"capacity": check.upper, "metric": check.metric, **overrides})
    if "capacity" in overrides and "metric" in overrides:
        return SimConfig(**overrides)
    raise ConfigError(
        f"policy {policy.pool}: no capacity to backtest against"
        " (a capacity check, a target or a threshold's upper)"
    )


class _Load:
    """A trace's load as a step function of time (each row holds until the next one)."""

    def __init__(self, points: list[tuple[float, float]]) -> None:
        self.times = [t for t, _ in points]
        self.values = [v for _, v in points]
        self.index = 0

    def at(self, now: float) -> float:
        return self.values[max(0, bisect.bisect_right(self.times, now) - 1)]

    def over(self, t0: float, t1: float, limit: float) -> tuple[float, float]:
        """(mean load over [t0, t1), seconds of it above `limit`); calls go forward in time."""
        times, values = self.times, self.values
        i = self.index
        while i + 1 < len(times) and times[i + 1] <= t0:
            i += 1
        self.index = i
        area = above = 0.0
        t = t0
        while t < t1:
            nxt = times[i + 1] if i + 1 < len(times) and times[i + 1] < t1 else t1
            value = values[i] if times[i] <= t else 0.0
            area += value * (nxt - t)
            if value > limit:
                above += nxt - t
            t = nxt
            if i + 1 < len(times) and times[i + 1] <= t:
                i += 1
        return area / (t1 - t0), above


def simulate(
    trace: Trace, controller: Controller, policy: PoolPolicy, config: SimConfig
) -> BacktestReport:
    """Replay `trace` through `controller`, which sizes a pool bounded by the policy.

    Every tick of `step` seconds each ready node reports the mean of its share of the load
    over that tick (an agent's sample), so an evaluation reads the average of the samples in
    its window, as on a live grid; the time under capacity is counted from the trace itself.
    """
    if config.step <= 0:
        raise ConfigError("the simulated step must be more than 0s")
    reads = {c.metric for c in policy.checks if isinstance(c, MetricChecks)}
    loads: dict[str, _Load] = {}
    for metric in sorted({*reads, config.metric}):
        points = trace.points.get(metric) or (
            trace.points.get(ALL_METRICS) if metric == config.metric else None
        )
        if points:
            loads[metric] = _Load(points)
    if config.metric not in loads:
        raise ConfigError(f"trace {trace.name} has no values for {config.metric}")
    source = MemoryMetrics()
    start, end, dt = trace.start, trace.end, config.step
    main = loads[config.metric]
    size = config.initial or ceil_safe(main.at(start) / config.capacity)
    size = max(policy.min, min(policy.max, size))
    ready_at = [start] * size  # when each allocated node is (or was) ready; sorted
    report = BacktestReport(controller.name, trace.name, 0.0, 0.0, 0.0, 0, 0, size,
                            spin_up=config.spin_up)  # fmt: skip
    last_direction = 0
    next_eval = start + controller.interval
    now = start
    while now < end - 1e-9:
        t1 = min(now + dt, end)
        ready = bisect.bisect_right(ready_at, now)
        minutes = (t1 - now) / 60.0
        for metric, load in loads.items():
            limit = ready * config.capacity * (1 + 1e-9) if ready else 0.0
            mean, above = load.over(now, t1, limit)
            if metric == config.metric:
                report.minutes_under_capacity += above / 60.0
                report.timeline.append((now, mean, len(ready_at), ready))
            if ready:
                source.add(policy.pool, metric, uniform_partial(t1, "sim", ready, mean / ready))
        report.minutes += minutes
        report.node_minutes += len(ready_at) * minutes
        now = t1
        if now >= next_eval - 1e-9:
            next_eval = now + controller.interval
            desired, reason = controller.decide(now, len(ready_at), source)
            if desired != len(ready_at):
                direction = 1 if desired > len(ready_at) else -1
                report.actions.append((now, len(ready_at), desired, reason))
                if last_direction and direction != last_direction:
                    report.direction_changes += 1
                last_direction = direction
                if desired > len(ready_at):
                    ready_at += [now + config.spin_up] * (desired - len(ready_at))
                else:
                    ready_at = ready_at[:desired]  # the newest (pending first) go
            report.max_nodes = max(report.max_nodes, len(ready_at))
    report.scale_actions = len(report.actions)
    report.node_minutes = round(report.node_minutes, 2)
    report.minutes_under_capacity = round(report.minutes_under_capacity, 2)
    return report


def run_policy(policy: PoolPolicy, trace: Trace, config: SimConfig | None = None) -> BacktestReport:
    config = config or default_sim_config(policy)
    return simulate(trace, PolicyController(policy), policy, config)


def run_hpa(
    policy: PoolPolicy,
    trace: Trace,
    config: SimConfig | None = None,
    metric: str = "avg60",
    utilization: float = 1.0,
) -> BacktestReport:
    """The HPA baseline with the policy's min/max, targeting `utilization` x capacity."""
    config = config or default_sim_config(policy)
    hpa = HPA(config.capacity * utilization, policy.min, policy.max)
    controller = HPAController(hpa, policy.pool, config.metric, metric)
    report = simulate(trace, controller, policy, config)
    report.controller = f"hpa {metric} {utilization:.0%}"
    return report


def run_nomad(
    policy: PoolPolicy, trace: Trace, config: SimConfig | None = None, utilization: float = 1.0
) -> BacktestReport:
    """The Nomad target-value baseline with the policy's min/max."""
    config = config or default_sim_config(policy)
    controller = NomadController(
        config.capacity * utilization, policy.pool, config.metric, policy.min, policy.max
    )
    report = simulate(trace, controller, policy, config)
    report.controller = f"nomad {utilization:.0%}"
    return report


def run_oracle(policy: PoolPolicy, trace: Trace, config: SimConfig | None = None) -> BacktestReport:
    """Perfect foresight, for reference: ceil(load / capacity) nodes, ready the moment needed.

    It is never under capacity and shows the least node-minutes that achieves that.
    """
    config = config or default_sim_config(policy)
    report = BacktestReport("oracle", trace.name, 0.0, 0.0, 0.0, 0, 0, 0, spin_up=0.0)
    points = trace.points.get(config.metric) or trace.points.get(ALL_METRICS) or []
    for (t, load), nxt in zip(points, [*points[1:], (trace.end, 0.0)], strict=True):
        minutes = (nxt[0] - t) / 60.0
        size = max(policy.min, min(policy.max, ceil_safe(load / config.capacity)))
        if report.max_nodes and size != report.timeline[-1][2]:
            report.scale_actions += 1
        report.timeline.append((t, load, size, size))
        report.minutes += minutes
        report.node_minutes += size * minutes
        if load > size * config.capacity * (1 + 1e-9):
            report.minutes_under_capacity += minutes  # only when max caps it
        report.max_nodes = max(report.max_nodes, size)
    report.node_minutes = round(report.node_minutes, 2)
    report.minutes_under_capacity = round(report.minutes_under_capacity, 2)
    return report


# ---- output ------------------------------------------------------------------------------


def format_table(reports: Sequence[BacktestReport]) -> str:
    """A Markdown table of the reports."""
    head = (
        "| trace | spin-up | controller | node-minutes | minutes under capacity "
        "| direction changes | scaling actions | max nodes |\n"
        "|---|---:|---|---:|---:|---:|---:|---:|"
    )
    rows = [
        f"| {r.trace} | {r.spin_up:.0f}s | {r.controller} | {r.node_minutes:.0f} "
        f"| {r.minutes_under_capacity:.1f} | {r.direction_changes} | {r.scale_actions} "
        f"| {r.max_nodes} |"
        for r in reports
    ]
    return "\n".join([head, *rows])


def plot(
    reports: Sequence[BacktestReport], path: str | Path, capacity: float, title: str = ""
) -> None:
    """Load (in nodes' worth of capacity) against allocated nodes, one line per controller."""
    import matplotlib  # noqa: PLC0415 - the optional `plot` extra, only for a PNG

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after matplotlib.use

    fig, ax = plt.subplots(figsize=(11, 4.5))
    first = reports[0].timeline
    t0 = first[0][0]
    hours = [(t - t0) / 3600 for t, *_ in first]
    needed = [load / capacity for _, load, *_ in first]
    ax.plot(hours, needed, color="0.6", lw=1, label="load / capacity")
    for report in reports:
        xs = [(t - t0) / 3600 for t, *_ in report.timeline]
        nodes = [n for *_, n, _ in report.timeline]
        ax.step(xs, nodes, where="post", lw=1.2, label=report.controller)
    ax.set_xlabel("hours")
    ax.set_ylabel("nodes")
    ax.set_title(title or reports[0].trace)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
