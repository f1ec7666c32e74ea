"""What `grid policy backtest` runs: every policy x trace x spin-up time.

For each policy, trace and spin-up time: the policy's report beside the baselines (the HPA
with each metric variant at 100 % of capacity, optionally Nomad's target-value and perfect
foresight), or with `hpa_sweep` the whole HPA cost curve, Grid's point on it and the verdict
(sweep.py); optionally a PNG per run.

    grid policy backtest POLICY.yaml --trace TRACE.csv... [--hpa-sweep] [--nomad] [--oracle]
        [--hpa-metric instant|avg60] [--step 5s] [--spin-up 10s --spin-up 60s] [--plot out.png]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grid.autoscaler.backtest import (
    HPA_METRICS,
    BacktestReport,
    default_sim_config,
    format_table,
    load_trace,
    plot,
    run_hpa,
    run_nomad,
    run_oracle,
    run_policy,
)
from grid.autoscaler.policy import PoolPolicy
from grid.autoscaler.sweep import Sweep, format_sweeps, plot_sweep, sweep
from grid.core.durations import format_duration
from grid.core.errors import ConfigError


@dataclass
class Options:
    spin_ups: Sequence[float] = (60.0,)
    step: float = 5.0
    hpa: bool = True
    hpa_metrics: Sequence[str] = HPA_METRICS
    hpa_sweep: bool = False
    nomad: bool = False
    oracle: bool = False
    plot: Path | None = None


@dataclass
class Results:
    reports: list[BacktestReport] = field(default_factory=list)
    sweeps: list[Sweep] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"reports": [r.to_dict() for r in self.reports],
                "sweeps": [s.to_dict() for s in self.sweeps]}  # fmt: skip

    def render(self) -> str:
        parts = []
        if self.reports:
            parts.append(format_table(self.reports))
        if self.sweeps:
            parts.append(format_sweeps(self.sweeps))
            parts += [f"{s.trace} (spin-up {s.spin_up:.0f}s): {s.verdict()}" for s in self.sweeps]
        return "\n\n".join(parts)


def check_options(options: Options) -> None:
    """Refuse what cannot be simulated (a zero step would never advance time)."""
    if options.step <= 0:
        raise ConfigError(f"--step must be more than 0s (got {format_duration(options.step)})")
    if not options.spin_ups or any(s < 0 for s in options.spin_ups):
        raise ConfigError("--spin-up must be 0s or more")
    for metric in options.hpa_metrics:
        if metric not in HPA_METRICS:
            raise ConfigError(f"--hpa-metric must be one of {', '.join(HPA_METRICS)}")


def run(policies: Sequence[PoolPolicy], traces: Sequence[Path], options: Options) -> Results:
    check_options(options)
    results = Results()
    many = len(policies) * len(traces) * len(options.spin_ups) > 1
    loaded = [load_trace(path) for path in traces]
    for policy in policies:
        for trace in loaded:
            for spin_up in options.spin_ups:
                config = default_sim_config(policy, step=options.step, spin_up=spin_up)
                out = None
                if options.plot is not None:
                    name = f"{options.plot.stem}-{policy.pool}-{trace.name}-{spin_up:.0f}s"
                    out = options.plot.with_name(name + options.plot.suffix) if many else None
                    out = out or options.plot
                    results.plots.append(out)
                if options.hpa_sweep:
                    found = sweep(policy, trace, config, nomad=options.nomad)
                    results.sweeps.append(found)
                    if out is not None:
                        plot_sweep(found, out, config.capacity)
                    continue
                runs = [run_policy(policy, trace, config)]
                if options.hpa:
                    metrics = options.hpa_metrics or HPA_METRICS
                    runs += [run_hpa(policy, trace, config, m) for m in metrics]
                if options.nomad:
                    runs.append(run_nomad(policy, trace, config))
                if options.oracle:
                    runs.append(run_oracle(policy, trace, config))
                if out is not None:
                    title = f"{policy.pool} on {trace.name}, spin-up {spin_up:.0f}s"
                    plot(runs, out, config.capacity, title=title)
                results.reports += runs
    return results
