"""`grid sim`: many simulated agents in this process, joining a real grid (benchmarks, CI)."""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import click

from grid.cli.common import Context, Duration, Rate, fail, pass_ctx
from grid.core import naming
from grid.core.connection import role_url
from grid.core.logs import setup_logging


@click.command()
@click.option("--agents", type=click.IntRange(1, 100_000), required=True, help="Agents to run.")
@click.option(
    "--nodes-per-agent",
    type=click.IntRange(1, 10_000),
    default=10,
    show_default=True,
    help="Capacity (max nodes) of each agent; `grid scale` decides how many run.",
)
@click.option("--churn", type=Rate(), default="0", help="Agents leaving, each replaced by a "
              "new one joining: 2/s, 30/min. [default: none]")  # fmt: skip
@click.option("--crash-rate", type=Rate(), default="0", help="Node crashes: 5/s, 1/min.")
@click.option("--silent", type=click.IntRange(0), default=0, help="Agents that go silent.")
@click.option("--chaos-after", type=Duration(), default="0s", show_default=True,
              help="When churn, crashes and silence start, after every agent joined.")  # fmt: skip
@click.option("--chaos-on-signal", is_flag=True, help="Start the chaos on SIGUSR1 instead.")
@click.option("--chaos-for", type=Duration(), help="How long churn and crashes last.")
@click.option("--duration", type=Duration(), help="Stop after this long. [default: Ctrl-C]")
@click.option("--prefix", default="sim", show_default=True, help="Agent ids are PREFIX-00001...")
@click.option("--shared-endpoint", is_flag=True, help="All nodes answer on one socket.")
@click.option("--consumers", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--beat-threads", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--seed", type=int, help="Seed of the chaos' random choices.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_ctx
def sim(
    ctx: Context,
    agents: int,
    nodes_per_agent: int,
    churn: float,
    crash_rate: float,
    silent: int,
    chaos_after: float,
    chaos_on_signal: bool,
    chaos_for: float | None,
    duration: float | None,
    prefix: str,
    shared_endpoint: bool,
    consumers: int,
    beat_threads: int,
    seed: int | None,
    as_json: bool,
) -> None:
    """Run many simulated agents in this process against a real Redis and master.

    Each agent registers, heartbeats and consumes its own queue through the real agent
    code; its nodes are simulated (the `sim` platform: no process, a loopback socket each).
    Chaos on demand: node crashes, agents going silent, agents leaving and joining.
    Ctrl-C (or the end of --duration) stops every agent cleanly: nodes stopped, unregistered.
    """
    if not naming.valid_id(f"{prefix}-00001"):
        fail(f"bad --prefix {prefix!r}: use lowercase letters, digits and '-'")
    if silent > agents:
        fail(f"--silent {silent} is more than --agents {agents}")
    from grid.core.celery_app import app, configure  # noqa: PLC0415 - celery is slow to import
    from grid.workers.agent.sim.engine import SimOptions, Simulator, check_descriptors, sim_clients  # noqa: PLC0415 - per command: a fast CLI start

    if not shared_endpoint:
        check_descriptors(agents * nodes_per_agent)

    settings = ctx.settings
    setup_logging("WARNING", settings.log_format)  # one INFO line per agent is too many
    url = ctx.broker_url
    configure(url)

    def reply(task_id: str, result: Any) -> None:
        app.backend.store_result(task_id, result, "SUCCESS")

    options = SimOptions(
        agents=agents,
        nodes_per_agent=nodes_per_agent,
        prefix=prefix,
        churn=churn,
        crash_rate=crash_rate,
        silent=silent,
        chaos_after=None if chaos_on_signal else chaos_after,
        chaos_for=chaos_for,
        shared_endpoint=shared_endpoint,
        consumers=consumers,
        beat_threads=beat_threads,
        seed=seed,
    )

    def say(line: str) -> None:
        click.echo(line, err=True)

    ctx.redis  # noqa: B018 - fail fast (exit 2) when Redis is unreachable
    clients = sim_clients(role_url(settings, "state"), role_url(settings, "events"))
    simulator = Simulator(settings, clients, url, options, reply=reply, say=say)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: simulator.start_chaos())
    try:
        simulator.start()
        reg = simulator.summary()["registration_ms_p50"]
        say(
            f"{agents} simulated agents registered (p50 {reg} ms each), prefix {prefix}; "
            f"sim host {simulator.host.url}"
        )
        simulator.run(stop, duration)
    finally:
        say("stopping the simulated agents ...")
        summary = simulator.summary()
        simulator.stop()
        say(f"simulator stopped: {summary['agents']} agents unregistered")
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo("summary: " + ", ".join(f"{k} {v}" for k, v in summary.items() if k != "silent"))


COMMANDS = [sim]
