"""Long-running commands: `grid up`, `grid master`, `grid agent`, `grid flower`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from grid.cli.common import Context, fail, pass_ctx, wait_until
from grid.core import naming
from grid.core.errors import ConfigError, GridError
from grid.core.logs import setup_logging
from grid.core.state import AgentStatus
from grid.core.tasknames import TaskName
from grid.platforms import PLATFORM_NAMES, parse_config


def _parse_labels(values: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"bad --label {item!r}: use key=value")
        labels[key] = value
    return labels


@click.command()
@click.option("--id", "agent_id", help="Agent id (unique in the grid; DNS-label shaped).")
@click.option(
    "--platform", type=click.Choice(PLATFORM_NAMES), help="How nodes run. [default: process]"
)
@click.option(
    "--max-nodes", type=click.IntRange(1, 10_000), help="Capacity of this agent. [default: 10]"
)
@click.option(
    "--label", "labels", multiple=True, metavar="KEY=VALUE", help="Placement label (repeatable)."
)
@click.option("--cost", type=click.FloatRange(0), help="Cost per node, for cost-aware placement.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Agent TOML file.")
@pass_ctx
def agent(
    ctx: Context,
    agent_id: str | None,
    platform: str | None,
    max_nodes: int | None,
    labels: tuple[str, ...],
    cost: float | None,
    config_path: Path | None,
) -> None:
    """Run an agent: a Celery worker on its own queue that runs nodes on this machine.

    It registers, heartbeats, supervises its nodes, and on Ctrl-C stops its nodes and
    unregisters. Flags override the values of --config.
    """
    from grid.workers.agent.config import AgentFile, load_agent_config  # noqa: PLC0415 - per command: a fast CLI start

    file = load_agent_config(config_path) if config_path else AgentFile()
    section = file.agent
    agent_id = agent_id or section.id
    if not agent_id:
        raise ConfigError("an agent needs an id: --id ID (or [agent] id in --config)")
    if not naming.valid_id(agent_id):
        raise ConfigError(f"bad agent id {agent_id!r}: use lowercase letters, digits and '-'")
    from grid.workers.agent.runtime import AgentOptions, AgentRuntime, set_current_agent  # noqa: PLC0415 - per command: a fast CLI start

    options = AgentOptions(
        agent_id=agent_id,
        platform=platform or section.platform,
        max_nodes=max_nodes or section.max_nodes,
        labels={**section.labels, **_parse_labels(labels)},
        cost=section.cost if cost is None else cost,
        platform_config=file.platform,
    )
    parse_config(options.platform, options.platform_config)  # bad input fails before Redis
    settings = ctx.settings
    setup_logging(settings.log_level, settings.log_format)
    runtime = AgentRuntime(settings, ctx.clients(), options)
    runtime.start()  # ConflictError (exit 2) when the id is held by a live agent
    set_current_agent(runtime)
    click.echo(
        f"agent {agent_id} registered in {runtime.registration_ms:.1f} ms "
        f"({options.platform}, max {options.max_nodes} nodes), "
        f"queue {naming.agent_queue(agent_id)}",
        err=True,
    )
    import grid.tasks.agent  # noqa: F401, PLC0415 - registers the tasks
    from grid.workers.launch import run_worker  # noqa: PLC0415 - per command: a fast CLI start

    try:
        run_worker(
            ctx.broker_url,
            naming.agent_worker_name(agent_id, socket.gethostname()),
            [naming.agent_queue(agent_id)],
            pool="threads",
            concurrency=settings.agent_concurrency,
            loglevel="WARNING",
        )
    finally:
        runtime.shutdown(stop_nodes=True)
        click.echo(f"agent {agent_id} stopped", err=True)


@click.command()
@click.option("--id", "master_id", help="Master id (default: hostname-pid).")
@pass_ctx
def master(ctx: Context, master_id: str | None) -> None:
    """Run a master: reconciler, health checks and autoscaler, active while it leads.

    Several masters may run; one holds the leader lease in Redis, the others stand by and
    take over within the lease time (GRID_LEASE_TTL) if it dies.
    """
    from grid.workers.master.runtime import (  # noqa: PLC0415 - per command: a fast CLI start
        LeadershipStep,
        MasterRuntime,
        set_current_master,
    )

    settings = ctx.settings
    setup_logging(settings.log_level, settings.log_format)
    runtime = MasterRuntime(settings, ctx.clients(), master_id)
    set_current_master(runtime)
    web = _start_web(runtime)
    pages = f"; pages at {web.url}" if web else ""
    click.echo(f"master {runtime.master_id} started{pages}; waiting for leadership", err=True)
    import grid.tasks.master  # noqa: F401, PLC0415
    from grid.workers.launch import run_worker  # noqa: PLC0415 - per command: a fast CLI start

    try:
        run_worker(
            ctx.broker_url,
            naming.master_worker_name(runtime.master_id, socket.gethostname()),
            [naming.master_private_queue(runtime.master_id)],
            pool="solo",
            concurrency=1,
            loglevel="WARNING",
            consumer_steps=(LeadershipStep,),
        )
    finally:
        runtime.shutdown()
        if web is not None:
            web.stop()
        click.echo(f"master {runtime.master_id} stopped", err=True)


def _start_web(runtime: Any) -> Any:
    """The master's pages; a busy port only costs the pages, not the master."""
    from grid.workers.master.pages import WebServer  # noqa: PLC0415 - per command: a fast CLI start

    settings = runtime.settings
    if settings.http_port < 0:
        return None
    try:
        web = WebServer(runtime.state, runtime.events, settings.http_host, settings.http_port)
    except OSError as exc:
        click.echo(f"master pages not served: port {settings.http_port}: {exc.strerror}", err=True)
        return None
    web.start()
    runtime.web_url = web.url
    return web


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True)
@pass_ctx
def flower(ctx: Context, port: int, address: str) -> None:
    """Run Flower, Celery's monitoring UI, on the grid's broker."""
    from grid.core.celery_app import app, configure  # noqa: PLC0415 - per command: a fast CLI start

    ctx.client("broker")  # fail fast if the broker is unreachable
    os.environ.setdefault("C_FORCE_ROOT", "1")
    # In this process, on the configured app: a Sentinel broker needs its transport options
    # (a --broker URL cannot carry them), and no password shows in the process list.
    configure(ctx.broker_url)
    code: int | None = app.start(["flower", f"--port={port}", f"--address={address}"])
    if code:
        raise GridError(f"flower exited with code {code}")


def _grid_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "grid.cli.main", *args]


@click.command()
@click.option("--agents", "n_agents", type=click.IntRange(0, 100), default=2, show_default=True)
@click.option(
    "--nodes",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Desired size of the default pool once the grid is up.",
)
@click.option(
    "--max-nodes",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="Capacity of each agent.",
)
@click.option("--flower", "with_flower", is_flag=True, help="Also run Flower on port 5555.")
@click.option("--flower-port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@pass_ctx
def up(
    ctx: Context, n_agents: int, nodes: int, max_nodes: int, with_flower: bool, flower_port: int
) -> None:
    """Start a whole local grid: Redis (embedded unless GRID_REDIS_URL), a master, agents.

    Everything stops, with no process left behind, on Ctrl-C. From another terminal in the
    same folder, `grid scale --nodes 5` and friends find this grid by themselves.
    """
    from grid.core.redis_server import EmbeddedRedis, discover, remove_info, write_info  # noqa: PLC0415 - per command: a fast CLI start

    settings = ctx.settings
    home = settings.home
    server: EmbeddedRedis | None = None
    if settings.redis_url:
        url = settings.redis_url
    else:
        if discover(home):
            fail(f"a grid is already running from {home}/ (stop it first, or set GRID_HOME)")
        server = EmbeddedRedis(data_dir=home / "redis")
        url = server.start()
        write_info(home, server)
        click.echo(f"redis    {url} (embedded, data in {home}/redis, append-only)", err=True)
    env = {**os.environ, "GRID_REDIS_URL": url, "GRID_HOME": str(home)}
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(name: str, argv: list[str]) -> None:
        with (logs / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        children.append((name, proc))
        click.echo(f"{name:<8} pid {proc.pid}, log {logs / (name + '.log')}", err=True)

    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        start("master", _grid_cmd("master"))
        for i in range(1, n_agents + 1):
            start(
                f"agent-{i}",
                _grid_cmd("agent", "--id", f"agent-{i}", "--max-nodes", str(max_nodes)),
            )
        if with_flower:
            start("flower", _grid_cmd("flower", "--port", str(flower_port)))
        state = ctx.state  # finds the embedded server through GRID_HOME, as the children do

        def ready() -> tuple[bool, str]:
            agents = [a for a in state.agents() if a.status == AgentStatus.ONLINE]
            leader = state.lease_holder(naming.leader_key())
            dead = [n for n, p in children if p.poll() is not None]
            if dead:
                raise GridError(f"{', '.join(dead)} exited at start; see {logs}/")
            master_state = "leading" if leader else "starting"
            done = len(agents) >= n_agents and leader is not None and not stopping
            return done, f"waiting: {len(agents)}/{n_agents} agents, master {master_state}"

        if not wait_until(ready, timeout=60, quiet=False) and not stopping:
            raise GridError(f"the grid did not come up within 60s; see {logs}/")
        if nodes and not stopping:
            state.set_desired(naming.DEFAULT_POOL, nodes)
            ctx.send_task(TaskName.RECONCILE, ["grid up"], naming.MASTER_QUEUE)
            click.echo(f"scaling pool {naming.DEFAULT_POOL} to {nodes} nodes", err=True)
        if not stopping:
            flower_line = f"; Flower on http://127.0.0.1:{flower_port}" if with_flower else ""
            click.echo(
                f"grid is up: 1 master, {n_agents} agent(s){flower_line}. "
                "Try 'grid scale --nodes 5' in another terminal. Ctrl-C stops everything.",
                err=True,
            )
        while not stopping:
            for name, proc in children:
                if proc.poll() is not None:
                    click.echo(
                        f"{name} exited with code {proc.returncode}; stopping the grid", err=True
                    )
                    stopping = True
                    break
            time.sleep(0.2)
    finally:
        click.echo("stopping the grid ...", err=True)
        _stop_children([c for c in children if c[0].startswith("agent")], timeout=60)
        _stop_children([c for c in children if not c[0].startswith("agent")], timeout=30)
        if server is not None:
            server.stop()
            remove_info(home)
        click.echo("grid stopped", err=True)


def _stop_children(children: list[tuple[str, subprocess.Popen[bytes]]], timeout: float) -> None:
    """SIGTERM (Celery's warm shutdown), then SIGKILL to the group after `timeout`."""
    for _, proc in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for name, proc in children:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            click.echo(f"{name} did not stop in time: killing it", err=True)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


COMMANDS = [up, master, agent, flower]
