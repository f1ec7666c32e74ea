"""Backtests: replay a metric trace through a policy (or the HPA baseline) in simulated time.

The trace is a CSV of ``timestamp,value[,metric]`` rows (a header row is optional; timestamps
are unix seconds or ISO 8601). ``value`` is the pool's total load of the metric at that time
(total requests/s, or total CPU % - 250 is two and a half busy nodes); a row with no metric
applies to every metric the policy reads. The load holds until the next row.

The load model is deliberately simple: every ready node carries an equal share, so each node
reports load / ready nodes; a new node becomes ready `spin_up` seconds after the scale-up,
scale-down is immediate (pending nodes go first). The policy runs through the very engine the
master uses (`collect_inputs` on an in-memory metrics source, `evaluate`, `next_state`).

Reported: scaling actions, node-minutes (every allocated node, ready or not), minutes under
target (per-node load above the `target`, or load with no ready node) and direction changes
(a scale-up after a scale-down or the reverse - the flapping count).

    python -m grid.autoscaler.backtest POLICY.yaml TRACE.csv [--hpa] [--plot out.png]
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from grid.autoscaler.engine import PoolState, collect_inputs, evaluate, next_state
from grid.autoscaler.hpa import HPA
from grid.autoscaler.metrics import MemoryMetrics, uniform_partial
from grid.autoscaler.policy import (
    MetricChecks,
    PoolPolicy,
    PredictiveCheck,
    TargetValueCheck,
    ThresholdCheck,
    load_policy_file,
)
from grid.autoscaler.votes import ceil_safe
from grid.core.durations import parse_duration
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
    """A policy through the production engine, with its state kept in memory."""

    def __init__(self, policy: PoolPolicy) -> None:
        self.policy = policy
        self.name = policy.pool
        self.interval = policy.evaluation_interval
        self.state = PoolState()

    def decide(self, now: float, current: int, source: MemoryMetrics) -> tuple[int, str]:
        inputs = collect_inputs(source, self.policy, now)
        decision = evaluate(self.policy, current, inputs, self.state, now)
        self.state = next_state(self.state, decision, applied=decision.changed)
        return decision.desired, decision.reason


class HPAController:
    """The Kubernetes HPA baseline reading the average per-node metric over `window`."""

    def __init__(self, hpa: HPA, pool: str, metric: str, window: float = 60.0) -> None:
        self.hpa = hpa
        self.name = "hpa"
        self.interval = hpa.sync_period
        self.pool = pool
        self.metric = metric
        self.window = window

    def decide(self, now: float, current: int, source: MemoryMetrics) -> tuple[int, str]:
        stats = source.window(self.pool, self.metric, self.window, now)
        if stats is None:
            return max(current, self.hpa.min_replicas), "no metrics"
        desired = self.hpa.recommend(now, current, stats.avg, stats.nodes)
        return desired, f"hpa: avg {stats.avg:.4g} target {self.hpa.target:g}"


# ---- simulation --------------------------------------------------------------------------


@dataclass
class SimConfig:
    target: float  # per-node load above which a minute counts as under target
    metric: str  # the metric whose load decides "under target"
    step: float = 15.0  # simulated seconds per tick
    spin_up: float = 60.0  # seconds from scale-up to a ready node
    initial: int | None = None  # starting size (default: what the first load needs)


@dataclass
class BacktestReport:
    controller: str
    trace: str
    minutes: float
    node_minutes: float
    minutes_under_target: float
    direction_changes: int
    scale_actions: int
    max_nodes: int
    actions: list[tuple[float, int, int, str]] = field(default_factory=list)
    timeline: list[tuple[float, float, int, int]] = field(default_factory=list, repr=False)

    def to_dict(self, with_timeline: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_timeline:
            data.pop("timeline")
        return data


def default_sim_config(policy: PoolPolicy, **overrides: Any) -> SimConfig:
    """Target and metric from the policy: the first target_value/predictive target, else the
    first threshold's upper bound."""
    for check in policy.checks:
        if isinstance(check, TargetValueCheck | PredictiveCheck):
            return SimConfig(**{"target": check.target, "metric": check.metric, **overrides})
    for check in policy.checks:
        if isinstance(check, ThresholdCheck) and check.upper is not None:
            return SimConfig(**{"target": check.upper, "metric": check.metric, **overrides})
    if "target" in overrides and "metric" in overrides:
        return SimConfig(**overrides)
    raise ConfigError(f"policy {policy.pool}: no target to backtest against; pass --target")


def simulate(
    trace: Trace, controller: Controller, policy: PoolPolicy, config: SimConfig
) -> BacktestReport:
    """Replay `trace` through `controller`, which sizes a pool bounded by the policy."""
    metrics = sorted({c.metric for c in policy.checks if isinstance(c, MetricChecks)})
    metrics = sorted({*metrics, config.metric})
    loads = {m: trace.points.get(m) or trace.points.get(ALL_METRICS) or [] for m in metrics}
    missing = [m for m, pts in loads.items() if not pts]
    if missing:
        raise ConfigError(f"trace {trace.name} has no values for {', '.join(missing)}")
    cursors = {m: 0 for m in metrics}
    source = MemoryMetrics()
    start, end, dt = trace.start, trace.end, config.step

    def load_at(metric: str, now: float) -> float:
        points, i = loads[metric], cursors[metric]
        while i + 1 < len(points) and points[i + 1][0] <= now:
            i += 1
        cursors[metric] = i
        return points[i][1]

    first = load_at(config.metric, start)
    size = config.initial or math.ceil(first / config.target)
    size = max(policy.min, min(policy.max, size))
    ready_at = [start] * size  # when each allocated node is (or was) ready
    report = BacktestReport(controller.name, trace.name, 0.0, 0.0, 0.0, 0, 0, size)
    last_direction = 0
    next_eval = start
    now = start
    while now < end:
        ready = sum(1 for t in ready_at if t <= now)
        for metric in metrics:
            load = load_at(metric, now)
            if ready:
                source.add(policy.pool, metric, uniform_partial(now, "sim", ready, load / ready))
        if now >= next_eval:
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
                    ready_at = sorted(ready_at)[:desired]  # newest (pending first) go
                ready = sum(1 for t in ready_at if t <= now)
        load = load_at(config.metric, now)
        minutes = dt / 60.0
        report.minutes += minutes
        report.node_minutes += len(ready_at) * minutes
        if load > 0 and (ready == 0 or load / ready > config.target * (1 + 1e-9)):
            report.minutes_under_target += minutes
        report.max_nodes = max(report.max_nodes, len(ready_at))
        report.timeline.append((now, load, len(ready_at), ready))
        now += dt
    report.scale_actions = len(report.actions)
    report.node_minutes = round(report.node_minutes, 2)
    report.minutes_under_target = round(report.minutes_under_target, 2)
    return report


def run_policy(policy: PoolPolicy, trace: Trace, config: SimConfig | None = None) -> BacktestReport:
    config = config or default_sim_config(policy)
    return simulate(trace, PolicyController(policy), policy, config)


def run_hpa(
    policy: PoolPolicy, trace: Trace, config: SimConfig | None = None, window: float = 60.0
) -> BacktestReport:
    """The HPA baseline with the policy's min/max, the config's target and metric."""
    config = config or default_sim_config(policy)
    hpa = HPA(config.target, policy.min, policy.max)
    return simulate(trace, HPAController(hpa, policy.pool, config.metric, window), policy, config)


def run_oracle(policy: PoolPolicy, trace: Trace, config: SimConfig | None = None) -> BacktestReport:
    """Perfect foresight, for reference: ceil(load / target) nodes, ready the moment needed.

    It is never under target and shows the least node-minutes that achieves that.
    """
    config = config or default_sim_config(policy)
    report = BacktestReport("oracle", trace.name, 0.0, 0.0, 0.0, 0, 0, 0)
    points = trace.points.get(config.metric) or trace.points.get(ALL_METRICS) or []
    index, last, now = 0, 0, trace.start
    while now < trace.end:
        while index + 1 < len(points) and points[index + 1][0] <= now:
            index += 1
        load = points[index][1]
        size = max(policy.min, min(policy.max, ceil_safe(load / config.target)))
        if last and size != last:
            report.scale_actions += 1
        last = size
        report.minutes += config.step / 60
        report.node_minutes += size * config.step / 60
        if load > size * config.target * (1 + 1e-9):
            report.minutes_under_target += config.step / 60  # only when max caps it
        report.max_nodes = max(report.max_nodes, size)
        now += config.step
    report.node_minutes = round(report.node_minutes, 2)
    report.minutes_under_target = round(report.minutes_under_target, 2)
    return report


# ---- output ------------------------------------------------------------------------------


def format_table(reports: Sequence[BacktestReport]) -> str:
    """A Markdown table of the reports."""
    head = (
        "| trace | controller | node-minutes | minutes under target | direction changes "
        "| scaling actions | max nodes |\n|---|---|---:|---:|---:|---:|---:|"
    )
    rows = [
        f"| {r.trace} | {r.controller} | {r.node_minutes:.0f} | {r.minutes_under_target:.1f} "
        f"| {r.direction_changes} | {r.scale_actions} | {r.max_nodes} |"
        for r in reports
    ]
    return "\n".join([head, *rows])


def plot(
    reports: Sequence[BacktestReport], path: str | Path, target: float, title: str = ""
) -> None:
    """Load (in nodes' worth at target) against allocated nodes, one line per controller."""
    import matplotlib  # noqa: PLC0415 - the optional `plot` extra, only for a PNG

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after matplotlib.use

    fig, ax = plt.subplots(figsize=(11, 4.5))
    first = reports[0].timeline
    t0 = first[0][0]
    hours = [(t - t0) / 3600 for t, *_ in first]
    needed = [load / target for _, load, *_ in first]
    ax.plot(hours, needed, color="0.6", lw=1, label="load / target")
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


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("policy", help="policy file")
    parser.add_argument("traces", nargs="+", help="trace CSV files")
    parser.add_argument("--pool", help="pool in the policy file (default: every pool)")
    parser.add_argument("--hpa", action="store_true", help="also run the Kubernetes HPA baseline")
    parser.add_argument("--oracle", action="store_true", help="also show perfect foresight")
    parser.add_argument("--step", default="15s", help="simulated tick (default 15s)")
    parser.add_argument("--spin-up", default="60s", help="node start-up delay (default 60s)")
    parser.add_argument("--plot", help="PNG file (one per trace: NAME-TRACE.png)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    overrides = {"step": parse_duration(args.step), "spin_up": parse_duration(args.spin_up)}
    reports = []
    for policy in load_policy_file(args.policy):
        if args.pool and policy.pool != args.pool:
            continue
        config = default_sim_config(policy, **overrides)
        for trace_path in args.traces:
            trace = load_trace(trace_path)
            pair = [run_policy(policy, trace, config)]
            if args.hpa:
                pair.append(run_hpa(policy, trace, config))
            if args.oracle:
                pair.append(run_oracle(policy, trace, config))
            if args.plot:
                out = Path(args.plot)
                shown = [r for r in pair if r.timeline]
                plot(shown, out.with_name(f"{out.stem}-{trace.name}{out.suffix}"), config.target)
            reports += pair
    print(format_table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
