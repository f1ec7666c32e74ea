"""Long-running commands: `grid up`, `grid master`, `grid agent`, `grid flower`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import redis

from grid.cli.common import Context, fail, pass_ctx, wait_until
from grid.cli.supervisor import Command, RedisChild, Restart, RestartPolicy, Supervisor
from grid.core import naming
from grid.core.connection import redis_client
from grid.core.errors import ConfigError, GridError, PlatformError
from grid.core.events import EventLog, EventType
from grid.core.logs import setup_logging
from grid.core.state import AgentStatus, GridState
from grid.core.tasknames import TaskName
from grid.platforms import PLATFORM_NAMES, create_platform, parse_config

# The master's worker threads: one each for the health, reconcile and autoscale ticks and one
# for on-demand tasks, so no pass queues behind another.
MASTER_WORKER_THREADS = 4


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
            # a thread per pass: health, reconcile, autoscale and on-demand tasks never wait
            # behind each other (each pass guards itself: see MasterRuntime)
            pool="threads",
            concurrency=MASTER_WORKER_THREADS,
            loglevel="WARNING",
            consumer_steps=(LeadershipStep,),
        )
    finally:
        runtime.shutdown()
        if web is not None:
            web.stop()
        click.echo(f"master {runtime.master_id} stopped", err=True)


def _start_web(runtime: Any) -> Any:
    """The master's pages; on a taken port (another grid here) the next free one, said so."""
    from grid.workers.master.pages import open_pages  # noqa: PLC0415 - per command: a fast CLI start

    settings = runtime.settings
    host, port = settings.http_host, settings.http_port
    if port < 0:
        return None
    try:
        web = open_pages(runtime.state, runtime.events, host, port)
    except OSError as exc:
        raise ConfigError(
            f"master pages: cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(set GRID_HTTP_HOST and GRID_HTTP_PORT, or GRID_HTTP_PORT=-1 for no pages)"
        ) from None
    if port and web.port != port:
        click.echo(f"master pages: port {port} is taken; serving on {web.url}", err=True)
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


def _say(line: str) -> None:
    click.echo(line, err=True)


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

    A child that dies is started again, with backoff (a restarted agent adopts its nodes);
    one that keeps failing stops the grid, exit 1. Everything stops, with no process left
    behind, on Ctrl-C. From another terminal in the same folder, `grid scale --nodes 5`
    and friends find this grid by themselves.
    """
    from grid.core.redis_server import EmbeddedRedis, discover, remove_info  # noqa: PLC0415 - per command: a fast CLI start

    settings = ctx.settings
    home = settings.home
    if not settings.redis_url and discover(home):
        fail(f"a grid is already running from {home}/ (stop it first, or set GRID_HOME)")
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    agent_ids = [f"agent-{i}" for i in range(1, n_agents + 1)]
    supervisor = Supervisor(RestartPolicy(), say=_say)
    stopping = _stop_on_signals()
    server: EmbeddedRedis | None = None
    try:
        if settings.redis_url:
            url = settings.redis_url
        else:
            server = EmbeddedRedis(data_dir=home / "redis")
            supervisor.start(RedisChild(server, home))
            url = server.url
            _say(f"redis    {url} (embedded, data in {home}/redis, append-only)")
        client = redis_client(url)
        events = EventLog.from_settings(client, settings)
        state = GridState(client)
        dashboard = _Dashboard(state)

        def restarted(restart: Restart) -> None:
            _record_restart(events, agent_ids, restart)
            if restart.name == "master":
                dashboard.master_restarted(restart.pid)

        supervisor.on_restart = restarted
        env = {**os.environ, "GRID_REDIS_URL": url, "GRID_HOME": str(home)}
        for child in _children(agent_ids, max_nodes, flower_port if with_flower else None, env):
            pid = supervisor.start(child)
            _say(f"{child.name:<8} pid {pid}, log {child.log}")
        pages = _wait_up(state, supervisor, n_agents, stopping, logs)
        if stopping.is_set():
            return
        if nodes:
            state.set_desired(naming.DEFAULT_POOL, nodes)
            ctx.send_task(TaskName.RECONCILE, ["grid up"], naming.MASTER_QUEUE)
            _say(f"scaling pool {naming.DEFAULT_POOL} to {nodes} nodes")
        pages_at = f", dashboard at {pages}" if pages else ", no dashboard (GRID_HTTP_PORT=-1)"
        flower_at = f", Flower at http://127.0.0.1:{flower_port}" if with_flower else ""
        _say(
            f"grid is up: 1 master, {n_agents} agent(s){pages_at}{flower_at}. "
            "Try 'grid scale --nodes 5' in another terminal. Ctrl-C stops everything."
        )
        while not stopping.is_set():
            supervisor.check()
            dashboard.poll()
            time.sleep(0.2)
    finally:
        _stop_grid(supervisor, home, agent_ids, settings.stop_grace)
        if server is not None:
            remove_info(home)
        _say("grid stopped")


def _stop_on_signals() -> threading.Event:
    """Set on Ctrl-C (SIGINT) or SIGTERM: `grid up` then stops the grid, exit 0."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stopping


def _children(
    agent_ids: list[str], max_nodes: int, flower_port: int | None, env: dict[str, str]
) -> list[Command]:
    """The master, the agents and Flower (when it has a port), each with its log."""
    logs = Path(env["GRID_HOME"]) / "logs"

    def command(name: str, *args: str) -> Command:
        return Command(name, _grid_cmd(*args), env, logs / f"{name}.log")

    children = [command("master", "master")]
    children += [command(a, "agent", "--id", a, "--max-nodes", str(max_nodes)) for a in agent_ids]
    if flower_port is not None:
        children.append(command("flower", "flower", "--port", str(flower_port)))
    return children


def _wait_up(
    state: GridState, supervisor: Supervisor, n_agents: int, stopping: threading.Event, logs: Path
) -> str:
    """Wait (supervising) for the agents online and a leader that wrote its pages URL;
    returns that URL ("" when the master serves no pages)."""
    from grid.workers.master.runtime import leader_pages  # noqa: PLC0415 - per command: a fast CLI start

    pages: str | None = None

    def ready() -> tuple[bool, str]:
        nonlocal pages
        supervisor.check()
        try:
            online = sum(a.status == AgentStatus.ONLINE for a in state.agents())
            pages = leader_pages(state)
        except redis.RedisError:
            return stopping.is_set(), "waiting: Redis does not answer"
        master = "leading" if pages is not None else "starting"
        done = online >= n_agents and pages is not None
        return done or stopping.is_set(), f"waiting: {online}/{n_agents} agents, master {master}"

    if not wait_until(ready, timeout=60):
        raise GridError(f"the grid did not come up within 60s; see {logs}/")
    return pages or ""


class _Dashboard:
    """Says where the pages are again once a restarted master leads (its port may differ)."""

    def __init__(self, state: GridState) -> None:
        self.state = state
        self.waiting_for = ""  # the id of a restarted master, until it leads

    def master_restarted(self, pid: int) -> None:
        from grid.workers.master.runtime import master_id_default  # noqa: PLC0415 - per command: a fast CLI start

        self.waiting_for = master_id_default(pid)

    def poll(self) -> None:
        from grid.workers.master.runtime import leader_pages  # noqa: PLC0415 - per command: a fast CLI start

        if not self.waiting_for:
            return
        with contextlib.suppress(redis.RedisError):
            url = leader_pages(self.state, self.waiting_for)
            if url is not None:
                self.waiting_for = ""
                _say(f"master leads again, dashboard at {url}" if url else "master leads again")


def _record_restart(events: EventLog, agent_ids: list[str], restart: Restart) -> None:
    """The `process_restarted` event; best effort (Redis may be the child that restarted)."""
    try:
        events.emit(
            EventType.PROCESS_RESTARTED,
            f"{restart.name} restarted as pid {restart.pid} (restart {restart.attempt}) "
            f"after: {restart.why}",
            agent_id=restart.name if restart.name in agent_ids else "",
            process=restart.name,
            pid=restart.pid,
            exit_code=restart.exit_code,
            signal=restart.signal,
            attempt=restart.attempt,
        )
    except redis.RedisError as exc:
        _say(f"the restart of {restart.name} is not in the events: {exc}")


def _stop_grid(supervisor: Supervisor, home: Path, agent_ids: list[str], grace: float) -> None:
    """Agents first (they stop their nodes), then any node they left, then the rest."""
    _say("stopping the grid ...")
    supervisor.stop(agent_ids, timeout=60)
    left = _stop_leftover_nodes(home, agent_ids, grace)
    if left:
        _say(f"stopped {len(left)} node(s) left running by the agents: {', '.join(left)}")
    supervisor.stop({"master", "flower"}, timeout=30)
    supervisor.stop({RedisChild.name}, timeout=30)


def _stop_leftover_nodes(home: Path, agent_ids: list[str], grace: float) -> list[str]:
    """Stop the node processes still running with the label of one of these agents."""
    from grid.workers.agent.runtime import process_nodes_root  # noqa: PLC0415 - per command: a fast CLI start

    stopped = []
    for agent_id in agent_ids:
        root = process_nodes_root(home, agent_id)
        if not root.is_dir():
            continue
        platform = create_platform("process", agent_id, {"root": str(root)})
        try:
            for handle in platform.list({naming.LABEL_AGENT_ID: agent_id}):
                try:
                    platform.stop(handle.node_id, grace=grace)
                except PlatformError as exc:  # say so, and stop the rest of the grid anyway
                    _say(f"node {handle.node_id} (pid {handle.pid}) did not stop: {exc}")
                    continue
                stopped.append(handle.node_id)
        finally:
            platform.close()
    return stopped


COMMANDS = [up, master, agent, flower]
