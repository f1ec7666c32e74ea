"""The autoscaler: policy schema, metrics store, strategies, decision engine, backtests.

Modules: ``policy`` (YAML schema and validation), ``metrics`` (Redis metrics store),
``votes`` (what a strategy returns), ``strategies`` (one module per strategy, found by name:
pure votes), ``engine`` (merge, bounds, step limits,
cooldowns -> Decision), ``service`` (applied policies, evaluation when due, decision log),
``backtest``, ``hpa`` and ``sweep`` (simulated replays against the Kubernetes HPA and Nomad
baselines, the HPA cost curve and the verdict), ``replay`` (what `grid policy backtest` runs).

Importing this package is cheap: pandas, scikit-learn and matplotlib load only when a
forecast or a plot needs them. docs/AUTOSCALING.md is the user guide.
"""

from __future__ import annotations

from grid.autoscaler.engine import Decision, PoolState, format_decision
from grid.autoscaler.metrics import MetricsStore
from grid.autoscaler.policy import PoolPolicy, load_policy_file, validate_policy_text
from grid.autoscaler.service import (
    apply_policy,
    evaluate_due_pools,
    get_policy,
    last_decisions,
    list_policies,
    remove_policy,
)
from grid.core.durations import format_duration, parse_duration

__all__ = [
    "Decision",
    "MetricsStore",
    "PoolPolicy",
    "PoolState",
    "apply_policy",
    "evaluate_due_pools",
    "format_decision",
    "format_duration",
    "get_policy",
    "last_decisions",
    "list_policies",
    "load_policy_file",
    "parse_duration",
    "remove_policy",
    "validate_policy_text",
]
