"""Autoscaling commands: `grid metrics`, `grid policy …`, `grid load`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from grid.cli.common import Context, Duration, emit_json, fail, json_option, pass_ctx, table
from grid.core import naming
from grid.core.errors import NotFoundError, PolicyError
from grid.core.state import NodeStatus


@click.command()
@click.option("--pool", help="Aggregates of one pool (default: every pool).")
@click.option("--node", "node_id", help="One node's samples instead of a pool.")
@click.option("--window", type=Duration(), default="5m", show_default=True)
@json_option
@pass_ctx
def metrics(
    ctx: Context, pool: str | None, node_id: str | None, window: float, as_json: bool
) -> None:
    """Metrics sampled from nodes: avg, max, min, sum and p95 over a window."""
    from grid.autoscaler.metrics import MetricsStore  # noqa: PLC0415 - per command: a fast CLI start

    if pool and node_id:
        fail("give --pool or --node, not both")
    store = MetricsStore(ctx.client("events"), retention=ctx.settings.metrics_retention)
    now = time.time()
    if node_id:
        if ctx.state.node(node_id) is None and not store.node_samples(node_id, now - window, now):
            raise NotFoundError(f"unknown node {node_id!r} (see 'grid nodes')")
        report: dict[str, Any] = {node_id: store.node_summary(node_id, window, now)}
    else:
        pools = [pool] if pool else store.pools()
        report = {p: store.pool_summary(p, window, now) for p in pools}
    if as_json:
        emit_json(report)
        return
    rows = []
    for owner, by_metric in report.items():
        for name, stats in by_metric.items():
            values = [_num(stats.get(k)) for k in ("avg", "max", "min", "sum", "p95")]
            rows.append((owner, name, *values, stats.get("samples", "")))
    table(
        rows,
        ["NODE" if node_id else "POOL", "METRIC", "AVG", "MAX", "MIN", "SUM", "P95", "SAMPLES"],
    )


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@click.group()
def policy() -> None:
    """Autoscaling policies: validate, apply, inspect, explain, backtest."""


def _load_files(files: tuple[Path, ...]) -> list[Any]:
    """Every policy of every file; all problems of all files are reported together."""
    from grid.autoscaler.policy import load_policy_file  # noqa: PLC0415 - per command: a fast CLI start

    policies, problems = [], []
    for path in files:
        try:
            policies += load_policy_file(path)
        except PolicyError as exc:
            problems += exc.problems  # each names its file and path
    if problems:
        for line in problems:
            click.echo(f"grid: {line}", err=True)
        raise SystemExit(2)
    return policies


files_argument = click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))


@policy.command()
@files_argument
def validate(files: tuple[Path, ...]) -> None:
    """Check policy files; every problem is listed with its path (exit 2 if any)."""
    for p in _load_files(files):
        click.echo(f"{p.pool}: ok ({len(p.checks)} check(s), min {p.min}, max {p.max})")


@policy.command()
@files_argument
@pass_ctx
def apply(ctx: Context, files: tuple[Path, ...]) -> None:
    """Validate and apply policies; a file with any error is refused whole."""
    from grid.autoscaler.service import apply_policy  # noqa: PLC0415 - per command: a fast CLI start

    policies = _load_files(files)
    client = ctx.redis
    for p in policies:
        apply_policy(client, p)
        click.echo(f"{p.pool}: applied")


@policy.command("list")
@json_option
@pass_ctx
def list_(ctx: Context, as_json: bool) -> None:
    """Applied policies."""
    from grid.autoscaler.service import list_policies  # noqa: PLC0415 - per command: a fast CLI start

    policies = list_policies(ctx.redis)
    desired = ctx.state.desired()
    if as_json:
        emit_json([p.model_dump(mode="json") for p in policies])
        return
    table(
        [
            (
                p.pool,
                p.min,
                p.max,
                desired.get(p.pool, "-"),
                ", ".join(c.name for c in p.checks),
                "yes" if p.dry_run else "",
            )
            for p in policies
        ],
        ["POOL", "MIN", "MAX", "DESIRED", "CHECKS", "DRY RUN"],
    )


def _policy_or_fail(ctx: Context, pool: str) -> Any:
    from grid.autoscaler.service import get_policy  # noqa: PLC0415 - per command: a fast CLI start

    found = get_policy(ctx.redis, pool)
    if found is None:
        raise NotFoundError(f"no policy applied for pool {pool!r} (see 'grid policy list')")
    return found


@policy.command()
@click.argument("pool")
@json_option
@pass_ctx
def show(ctx: Context, pool: str, as_json: bool) -> None:
    """An applied policy, as YAML."""
    found = _policy_or_fail(ctx, pool)
    if as_json:
        emit_json(found.model_dump(mode="json"))
    else:
        click.echo(found.to_yaml(), nl=False)


@policy.command()
@click.argument("pool")
@pass_ctx
def remove(ctx: Context, pool: str) -> None:
    """Stop autoscaling a pool (its size stays as it is)."""
    from grid.autoscaler.service import remove_policy  # noqa: PLC0415 - per command: a fast CLI start

    if not remove_policy(ctx.redis, pool):
        raise NotFoundError(f"no policy applied for pool {pool!r} (see 'grid policy list')")
    click.echo(f"{pool}: policy removed")


@policy.command()
@click.argument("pool")
@click.option("--last", "count", type=click.IntRange(1, 100), default=5, show_default=True)
@json_option
@pass_ctx
def explain(ctx: Context, pool: str, count: int, as_json: bool) -> None:
    """The last decisions for a pool: each check's vote, the merge, clamps, cooldowns."""
    from grid.autoscaler.service import last_decisions  # noqa: PLC0415 - per command: a fast CLI start

    decisions = last_decisions(ctx.redis, pool, count)
    if not decisions:
        _policy_or_fail(ctx, pool)
        click.echo(f"{pool}: no decision recorded yet")
        return
    if as_json:
        emit_json([d.to_dict() for d in decisions])
        return
    from grid.autoscaler.engine import format_decision  # noqa: PLC0415 - per command: a fast CLI start

    click.echo("\n\n".join(format_decision(d) for d in reversed(decisions)))


@policy.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--trace",
    "traces",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="CSV trace: timestamp,value[,metric] (repeatable).",
)
@click.option("--pool", help="Only this pool of the file.")
@click.option(
    "--hpa/--no-hpa", default=True, show_default=True, help="Also run the Kubernetes HPA baseline."
)
@click.option(
    "--hpa-metric",
    "hpa_metrics",
    multiple=True,
    type=click.Choice(["instant", "avg60"]),
    help="HPA metric: the per-sync value or a 1-minute average (repeatable; default both).",
)
@click.option(
    "--hpa-sweep", is_flag=True, help="HPA cost curve (target 50-100 %), Grid's point, verdict."
)
@click.option("--nomad", is_flag=True, help="Also the Nomad target-value baseline.")
@click.option("--oracle", is_flag=True, help="Also perfect foresight.")
@click.option("--step", type=Duration(), default="5s", show_default=True, help="Sampling step.")
@click.option(
    "--spin-up",
    "spin_ups",
    type=Duration(),
    multiple=True,
    default=("60s",),
    show_default=True,
    help="Node start-up delay (repeatable).",
)
@click.option(
    "--plot", "plot_path", type=click.Path(path_type=Path), help="PNG of each run (or sweep)."
)
@json_option
def backtest(
    file: Path,
    traces: tuple[Path, ...],
    pool: str | None,
    hpa: bool,
    hpa_metrics: tuple[str, ...],
    hpa_sweep: bool,
    nomad: bool,
    oracle: bool,
    step: float,
    spin_ups: tuple[float, ...],
    plot_path: Path | None,
    as_json: bool,
) -> None:
    """Replay metric traces through a policy in simulated time.

    Reports node-minutes, minutes under capacity, direction changes and scaling actions
    beside the Kubernetes HPA (and Nomad) on the same trace; --hpa-sweep draws the HPA's
    cost curve and says whether the policy beats it.
    """
    from grid.autoscaler import replay  # noqa: PLC0415 - per command: a fast CLI start

    policies = [p for p in _load_files((file,)) if pool is None or p.pool == pool]
    if not policies:
        fail(f"no pool {pool!r} in {file}")
    options = replay.Options(
        spin_ups=spin_ups, step=step, hpa=hpa, hpa_metrics=hpa_metrics,
        hpa_sweep=hpa_sweep, nomad=nomad, oracle=oracle, plot=plot_path,
    )  # fmt: skip
    results = replay.run(policies, traces, options)
    for out in results.plots:
        click.echo(f"plot written to {out}", err=True)
    if as_json:
        emit_json(results.to_json())
    else:
        click.echo(results.render())


@click.command()
@click.option("--pool", default=naming.DEFAULT_POOL, show_default=True)
@click.option(
    "--rps", type=click.FloatRange(min=0, min_open=True), required=True, help="Requests per second."
)
@click.option("--duration", type=Duration(), default="60s", show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 256), default=16, show_default=True)
@json_option
@pass_ctx
def load(
    ctx: Context, pool: str, rps: float, duration: float, concurrency: int, as_json: bool
) -> None:
    """Drive real HTTP traffic at a pool's running nodes (PUT and GET of small values)."""
    from grid.node.loadgen import LoadReport, run_load  # noqa: PLC0415 - per command: a fast CLI start

    state = ctx.state

    def endpoints() -> list[str]:
        return [
            n.endpoint
            for n in state.nodes(pool=pool)
            if n.status == NodeStatus.RUNNING and n.endpoint
        ]

    if not endpoints():
        fail(f"pool {pool!r} has no running node to send load to", code=1)

    def progress(elapsed: float, report: LoadReport) -> None:
        if as_json:
            return
        stats = report.as_dict()
        click.echo(
            f"{elapsed:5.0f}s  {len(endpoints())} node(s)  sent {stats['sent']}  "
            f"ok {stats['ok']}  errors {stats['errors']}",
            err=True,
        )

    report = run_load(endpoints, rps, duration, concurrency, progress)
    stats = report.as_dict()
    if as_json:
        emit_json(stats)
    else:
        click.echo(
            f"{stats['sent']} requests in {stats['seconds']}s ({stats['rate']}/s): "
            f"{stats['ok']} ok, {stats['errors']} errors, p50 {_num(stats['p50_ms'])} ms, "
            f"p99 {_num(stats['p99_ms'])} ms"
        )


COMMANDS = [metrics, policy, load]
