"""The HPA cost curve of a trace, Grid's point on it, and the verdict (issue 13's goal).

The HPA baseline is run with its target at 50 %, 55 %, ... 100 % of a node's capacity, with
both metric variants (`instant`, `avg60`); each run is a point (node-minutes, minutes under
capacity) and the lower envelope of all of them (the points no other point beats on both) is
the HPA's cost curve, linear between its points. The Nomad target-value baseline is swept the
same way, for reference. The verdict: **at Grid's node-minutes, Grid has at most half the
minutes under capacity of the HPA curve interpolated there, and no more direction changes
than the HPA at 100 %** (the fewer of its two variants). Left of the curve (Grid cheaper than
every HPA setting) the curve's first point is used; right of it, its last point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grid.autoscaler.backtest import (
    HPA_METRICS,
    BacktestReport,
    SimConfig,
    Trace,
    run_hpa,
    run_nomad,
    run_policy,
)
from grid.autoscaler.policy import PoolPolicy

UTILIZATIONS = tuple(u / 100 for u in range(50, 101, 5))


@dataclass
class Sweep:
    trace: str
    spin_up: float
    grid: BacktestReport
    hpa: list[tuple[str, float, BacktestReport]]  # (metric variant, utilization, report)
    nomad: list[tuple[float, BacktestReport]] = field(default_factory=list)

    @property
    def curve(self) -> list[tuple[float, float]]:
        return envelope([(r.node_minutes, r.minutes_under_capacity) for *_, r in self.hpa])

    @property
    def hpa_at_grid(self) -> float:
        return interpolate(self.curve, self.grid.node_minutes)

    @property
    def hpa_changes(self) -> int:
        """Direction changes of the HPA at 100 %: the fewer of its two metric variants."""
        return min(r.direction_changes for _, u, r in self.hpa if u == 1.0)

    @property
    def met(self) -> bool:
        return (
            self.grid.minutes_under_capacity <= 0.5 * self.hpa_at_grid + 1e-9
            and self.grid.direction_changes <= self.hpa_changes
        )

    def verdict(self) -> str:
        g, ratio = self.grid, self.grid.minutes_under_capacity / max(self.hpa_at_grid, 1e-9)
        shown = "-" if self.hpa_at_grid == 0 and g.minutes_under_capacity == 0 else f"{ratio:.2f}"
        return (
            f"{'met' if self.met else 'MISSED'}: at {g.node_minutes:.0f} node-minutes Grid is "
            f"{g.minutes_under_capacity:.1f} min under capacity, the HPA curve "
            f"{self.hpa_at_grid:.1f} (ratio {shown}, goal <= 0.5); direction changes "
            f"{g.direction_changes} vs {self.hpa_changes} (HPA at 100 %)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace": self.trace, "spin_up": self.spin_up, "grid": self.grid.to_dict(),
            "hpa": [{"metric": m, "utilization": u, **_point(r)} for m, u, r in self.hpa],
            "nomad": [{"utilization": u, **_point(r)} for u, r in self.nomad],
            "curve": self.curve, "hpa_at_grid": self.hpa_at_grid,
            "hpa_direction_changes_at_100": self.hpa_changes, "met": self.met,
            "verdict": self.verdict(),
        }  # fmt: skip


def _point(report: BacktestReport) -> dict[str, Any]:
    return {"node_minutes": report.node_minutes,
            "minutes_under_capacity": report.minutes_under_capacity,
            "direction_changes": report.direction_changes}  # fmt: skip


def envelope(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The lower envelope: sorted by cost, each point strictly better than every cheaper one."""
    curve: list[tuple[float, float]] = []
    for x, y in sorted(points):
        if not curve or y < curve[-1][1]:
            curve.append((x, y))
    return curve


def interpolate(curve: Sequence[tuple[float, float]], x: float) -> float:
    """The curve at `x`, linear between its points, flat beyond its ends."""
    if x <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in zip(curve, curve[1:], strict=False):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[-1][1]


def sweep(policy: PoolPolicy, trace: Trace, config: SimConfig, nomad: bool = True) -> Sweep:
    """Grid's policy, the HPA at every utilisation and metric variant, and Nomad's."""
    hpa = [(m, u, run_hpa(policy, trace, config, m, u)) for m in HPA_METRICS for u in UTILIZATIONS]
    nomads = [(u, run_nomad(policy, trace, config, u)) for u in UTILIZATIONS] if nomad else []
    return Sweep(trace.name, config.spin_up, run_policy(policy, trace, config), hpa, nomads)


def format_sweeps(sweeps: Sequence[Sweep]) -> str:
    """One Markdown row per sweep: Grid's point, the HPA curve there, the verdict."""
    head = (
        "| trace | spin-up | Grid node-min | Grid min under | HPA curve there | ratio "
        "| Grid dir. changes | HPA 100 % dir. changes | verdict |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    rows = []
    for s in sweeps:
        g = s.grid
        ratio = g.minutes_under_capacity / s.hpa_at_grid if s.hpa_at_grid else 0.0
        rows.append(
            f"| {s.trace} | {s.spin_up:.0f}s | {g.node_minutes:.0f} "
            f"| {g.minutes_under_capacity:.1f} | {s.hpa_at_grid:.1f} | {ratio:.2f} "
            f"| {g.direction_changes} | {s.hpa_changes} | {'met' if s.met else 'MISSED'} |"
        )
    return "\n".join([head, *rows])


def plot_sweep(result: Sweep, path: str | Path, capacity: float) -> None:
    """Two panels: load and nodes over time; the cost curves with Grid's point."""
    import matplotlib  # noqa: PLC0415 - the optional `plot` extra, only for a PNG

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after matplotlib.use

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.8), width_ratios=[1.6, 1])
    timeline = result.grid.timeline
    t0 = timeline[0][0]
    hours = [(t - t0) / 3600 for t, *_ in timeline]
    left.plot(hours, [load / capacity for _, load, *_ in timeline], color="0.6", lw=0.8,
              label="load / capacity")  # fmt: skip
    left.step(hours, [n for *_, n, _ in timeline], where="post", lw=1.2, color="C3",
              label="Grid (allocated)")  # fmt: skip
    near = min(result.hpa, key=lambda p: abs(p[2].node_minutes - result.grid.node_minutes))
    left.step([(t - t0) / 3600 for t, *_ in near[2].timeline],
              [n for *_, n, _ in near[2].timeline], where="post", lw=1, color="C0",
              label=f"HPA {near[0]} {near[1]:.0%} (closest cost)")  # fmt: skip
    left.set_xlabel("hours")
    left.set_ylabel("nodes")
    left.legend(loc="upper left", fontsize=8)
    left.set_title(f"{result.trace}, spin-up {result.spin_up:.0f}s")
    for metric, marker in (("instant", "o"), ("avg60", "s")):
        pts = [(r.node_minutes, r.minutes_under_capacity) for m, _, r in result.hpa if m == metric]
        right.scatter(*zip(*pts, strict=True), marker=marker, s=18, color="C0", alpha=0.6,
                      label=f"HPA {metric} 50-100 %")  # fmt: skip
    if result.nomad:
        pts = [(r.node_minutes, r.minutes_under_capacity) for _, r in result.nomad]
        right.scatter(*zip(*pts, strict=True), marker="^", s=18, color="C2", alpha=0.6,
                      label="Nomad target-value 50-100 %")  # fmt: skip
    xs, ys = zip(*result.curve, strict=True)
    right.plot(xs, ys, color="C0", lw=1.2, label="HPA cost curve")
    right.plot(xs, [y / 2 for y in ys], color="C0", lw=0.8, ls="--", label="half the curve")
    g = result.grid
    right.scatter([g.node_minutes], [g.minutes_under_capacity], marker="*", s=160, color="C3",
                  zorder=5, label="Grid default")  # fmt: skip
    right.set_xlabel("node-minutes")
    right.set_ylabel("minutes under capacity")
    right.set_title("met" if result.met else "MISSED", color="green" if result.met else "red")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
