"""Read commands: nodes, agents, status, events, logs, node-status. All take --json."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import click

from grid.cli.common import (
    Context,
    Duration,
    ago,
    emit_json,
    json_option,
    known_node,
    pass_ctx,
    print_records,
)
from grid.core import naming
from grid.core.errors import ConfigError
from grid.core.events import EVENT_TYPES, Event
from grid.core.state import NodeStatus
from grid.core.tasknames import TaskName
from grid.workers.agent.health import probe
from grid.workers.master.report import agents_with_node_counts, status_report


@click.command()
@click.option("--pool", help="Only this pool.")
@click.option("--agent", "agent_id", help="Only this agent.")
@click.option(
    "--status",
    type=click.Choice([s.value for s in NodeStatus]),
    help="Only nodes in this status.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="At most this many nodes (0: all); a note on stderr says when more match.",
)
@json_option
@pass_ctx
def nodes(
    ctx: Context,
    pool: str | None,
    agent_id: str | None,
    status: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List nodes: id, pool, agent, status, pid, port, endpoint, restarts (by id)."""
    wanted = NodeStatus(status) if status else None
    found = ctx.state.nodes(
        pool=pool, agent_id=agent_id, status=wanted, limit=limit + 1 if limit else None
    )
    if limit and len(found) > limit:
        found = found[:limit]
        click.echo(
            f"showing the first {limit} matching nodes of {ctx.state.node_total()} in the grid;"
            " narrow with --pool/--agent/--status or raise --limit (0: all)",
            err=True,
        )
    print_records(
        found,
        as_json,
        ["NODE", "POOL", "AGENT", "STATUS", "PID", "PORT", "ENDPOINT", "RESTARTS", "STARTED"],
        lambda r: (
            r.node_id,
            r.pool,
            r.agent_id,
            r.status,
            r.pid,
            r.port or "",
            r.endpoint,
            r.restart_count,
            ago(r.started_at) if r.status == NodeStatus.RUNNING else "",
        ),
    )


@click.command()
@json_option
@pass_ctx
def agents(ctx: Context, as_json: bool) -> None:
    """List agents: status, platform, nodes/capacity, cost, labels, last heartbeat."""
    print_records(
        agents_with_node_counts(ctx.state),
        as_json,
        ["AGENT", "STATUS", "PLATFORM", "NODES", "COST", "LABELS", "CPU", "HEARTBEAT", "HOST"],
        lambda a: (
            a.agent_id,
            a.status + (" (draining)" if a.draining else ""),
            a.platform,
            f"{a.node_count}/{a.max_nodes}",
            a.cost,
            ",".join(f"{k}={v}" for k, v in a.labels.items()),
            f"{a.cpu_percent:.0f}%",
            ago(a.last_heartbeat),
            a.hostname,
        ),
    )


@click.command()
@json_option
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """Cluster state (healthy / degraded / critical), agent and node counts, pools."""
    report = status_report(ctx.state)
    if as_json:
        emit_json(report)
        return
    color = {"healthy": "green", "degraded": "yellow", "critical": "red"}[report["cluster"]]
    click.echo(
        f"cluster  {click.style(report['cluster'], fg=color, bold=True)} ({report['reason']})"
    )
    click.echo(f"leader   {report['leader'] or 'none (no master running)'}")
    if report["pages"]:
        click.echo(f"pages    {report['pages']}")
    a = report["agents"]
    click.echo(
        f"agents   {a['total']} total: {a['online']} online, {a['degraded']} degraded, "
        f"{a['offline']} offline"
    )
    n = report["nodes"]
    others = ", ".join(f"{n[k]} {k}" for k in n if k not in ("total", "running") and n[k])
    click.echo(
        f"nodes    {n['total']} total: {n['running']} running" + (f", {others}" if others else "")
    )
    for pool, entry in sorted(report["pools"].items()):
        counts = entry["nodes"]
        want = entry["desired"] if entry["desired"] is not None else "-"
        line = f"pool     {pool}: desired {want}, "
        line += f"running {counts.get('running', 0)}"
        if entry["shortfall"]:
            line += click.style(f", {entry['shortfall']} do not fit (capacity shortfall)", fg="red")
        click.echo(line)


def _event_line(ev: Event) -> str:
    stamp = datetime.fromtimestamp(ev.ts).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"{stamp}  {ev.type:<18} {ev.message}"


@click.command()
@click.option("--type", "types", multiple=True, metavar="TYPE", help="Only this type (repeatable).")
@click.option("--agent", "agent_id")
@click.option("--node", "node_id")
@click.option("--pool")
@click.option("--since", type=Duration(), help="Only events newer than this (e.g. 10m, 1h).")
@click.option("--before", metavar="ID", help="Only events older than this event id (page back).")
@click.option("--after", metavar="ID", help="Only events newer than this event id (page on).")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events.")
@json_option
@pass_ctx
def events(
    ctx: Context,
    types: tuple[str, ...],
    agent_id: str | None,
    node_id: str | None,
    pool: str | None,
    since: float | None,
    before: str | None,
    after: str | None,
    limit: int,
    follow: bool,
    as_json: bool,
) -> None:
    """Show the event log, oldest first: the newest LIMIT events (older than --before), or
    the oldest LIMIT after --after. Types: see `grid events --help`."""
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise ConfigError(f"unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}")
    if follow and before is not None:
        raise ConfigError("--follow and --before do not go together: follow pages forward")
    start = None
    if since is not None:
        start = time.time() - since
        if start < 0:
            raise ConfigError(f"--since {since:g}s reaches back before 1970-01-01")
    filters: dict[str, Any] = {
        "types": set(types) or None,
        "agent_id": agent_id,
        "node_id": node_id,
        "pool": pool,
    }
    log = ctx.events
    found = log.read(since=start, limit=limit, before=before, after=after, **filters)
    if as_json and not follow:
        emit_json([e.as_dict() for e in found])
        return
    for ev in found:
        click.echo(_json_line(ev) if as_json else _event_line(ev))
    if not as_json and not follow and len(found) == limit:  # there may be another page
        hint = f"--after {found[-1].id}" if after and not before else f"--before {found[0].id}"
        click.echo(f"(more: grid events {hint})", err=True)
    if follow:
        last = found[-1].id if found else (after or "$")
        for new in log.follow(after=last, **filters):
            if new is not None:
                click.echo(_json_line(new) if as_json else _event_line(new))


events.help = (events.help or "") + "\n\nEvent types: " + ", ".join(EVENT_TYPES) + "."


def _json_line(ev: Event) -> str:
    return json.dumps(ev.as_dict(), default=str)


@click.command()
@click.argument("node_id")
@click.option("--lines", "-n", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--timeout", type=Duration(), default="10s", show_default=True)
@pass_ctx
def logs(ctx: Context, node_id: str, lines: int, timeout: float) -> None:
    """Print the last lines of a node's output (fetched through its agent)."""
    rec = known_node(ctx.state, node_id)
    text = ctx.call_task(
        TaskName.NODE_LOGS, [node_id, lines], naming.agent_queue(rec.agent_id), timeout
    )
    click.echo(text, nl=not str(text).endswith("\n"))


@click.command("node-status")
@click.argument("node_id")
@json_option
@pass_ctx
def node_status(ctx: Context, node_id: str, as_json: bool) -> None:
    """One node's record and a live health check of its endpoint."""
    rec = known_node(ctx.state, node_id)
    health = probe(rec.endpoint, timeout=2.0) if rec.endpoint else None
    report = {**rec.as_dict(), "health": health}
    if as_json:
        emit_json(report)
        return
    for key, value in report.items():
        if key != "health":
            click.echo(f"{key:<14} {value if value not in (None, '') else '-'}")
    summary = "no answer"
    if health:
        summary = f"ok (uptime {health.get('uptime', 0):.0f}s, {health.get('keys', 0)} keys)"
    click.echo(f"{'health':<14} {summary}")


COMMANDS = [nodes, agents, status, events, logs, node_status]
