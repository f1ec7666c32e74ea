"""Commands that change the grid: scale, spawn, stop, drain, undrain."""

from __future__ import annotations

import time

import click

from grid.cli.common import Context, Duration, fail, known_agent, known_node, pass_ctx, wait_until
from grid.core import naming
from grid.core.connection import confirm_replicated
from grid.core.errors import ConfigError
from grid.core.events import EventType
from grid.core.state import AgentStatus, GridState, NodeRecord, NodeStatus
from grid.core.tasknames import TaskName

wait_option = click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Wait until done, printing progress."
)
timeout_option = click.option(
    "--timeout", type=Duration(), default="120s", show_default=True, help="How long --wait waits."
)


FAILURES_BEFORE_GIVING_UP = 3


def _check_pool(pool: str) -> None:
    if not naming.valid_id(pool):
        raise ConfigError(f"bad pool name {pool!r}: use lowercase letters, digits and '-'")


def leader(state: GridState) -> str | None:
    return state.lease_holder(naming.leader_key())


@click.command()
@click.option("--nodes", type=click.IntRange(min=0), required=True, help="Desired number of nodes.")
@click.option("--pool", default=naming.DEFAULT_POOL, show_default=True)
@wait_option
@timeout_option
@pass_ctx
def scale(ctx: Context, nodes: int, pool: str, wait: bool, timeout: float) -> None:
    """Set the desired size of a pool; the master places or stops nodes to match."""
    _check_pool(pool)
    limit = ctx.settings.max_pool_size
    if nodes > limit:
        raise ConfigError(
            f"--nodes {nodes} is over the maximum pool size {limit} (GRID_MAX_POOL_SIZE)"
        )
    state = ctx.state
    before = state.desired().get(pool)
    state.set_desired(pool, nodes)
    confirm_replicated(ctx.redis, ctx.settings.state_min_replicas)  # survives a failover
    ctx.events.emit(
        EventType.SCALE_REQUESTED,
        f"pool {pool}: desired {before if before is not None else 0} -> {nodes}",
        pool=pool,
        desired=nodes,
        previous=before,
        source="cli",
    )
    if leader(state) is None:
        click.echo(
            f"pool {pool}: desired size {nodes} saved; no master is running, it applies "
            "when one starts ('grid master' or 'grid up')",
            err=True,
        )
        return
    started = time.monotonic()
    ctx.send_task(TaskName.RECONCILE, [f"scale {pool} to {nodes}"], naming.MASTER_QUEUE)
    if not wait:
        click.echo(f"pool {pool}: desired size {nodes}")
        return

    def progress() -> tuple[bool, str]:
        pool_nodes = state.nodes(pool=pool)
        running = sum(1 for n in pool_nodes if n.status == NodeStatus.RUNNING)
        pool_state = state.pool_status().get(pool, {})
        shortfall = pool_state.get("shortfall", 0)
        if pool_state.get("fail_streak", 0) >= FAILURES_BEFORE_GIVING_UP:
            last = ctx.events.read(types={"spawn_failed"}, pool=pool, limit=1)
            why = last[0].message if last else "see 'grid events --type spawn_failed'"
            fail(
                f"pool {pool}: nodes keep failing to start ({why}); the master keeps retrying "
                "with backoff",
                code=1,
            )
        done = running == nodes and len(pool_nodes) == nodes
        line = f"pool {pool}: {running}/{nodes} running, {len(pool_nodes)} total"
        if shortfall:
            line += f", {shortfall} do not fit"
        return done, line

    if not wait_until(progress, timeout):
        fail(
            f"pool {pool} did not reach {nodes} nodes within {timeout:.0f}s "
            "(see 'grid status' and 'grid events')",
            code=1,
        )
    click.echo(f"pool {pool}: {nodes} nodes running ({time.monotonic() - started:.2f}s)")


@click.command()
@click.option("--agent", "agent_id", required=True, help="Agent to run the node on.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Port (0 picks a free one).")
@click.option("--memory", "memory_mb", type=click.IntRange(16), help="Memory limit in MB.")
@click.option(
    "--pool",
    default="manual",
    show_default=True,
    help="Pool label; pools without a desired size are not reconciled.",
)
@wait_option
@timeout_option
@pass_ctx
def spawn(
    ctx: Context,
    agent_id: str,
    port: int,
    memory_mb: int | None,
    pool: str,
    wait: bool,
    timeout: float,
) -> None:
    """Start one node on a given agent, outside any scaled pool."""
    _check_pool(pool)
    state = ctx.state
    agent = known_agent(state, agent_id)
    if agent.status != AgentStatus.ONLINE:
        fail(f"agent {agent_id} is {agent.status}", code=1)
    used = sum(1 for n in state.nodes(agent_id=agent_id) if n.status != NodeStatus.LOST)
    if used >= agent.max_nodes:
        fail(f"agent {agent_id} is full ({used}/{agent.max_nodes} nodes)", code=1)
    rec = NodeRecord(
        node_id=naming.new_node_id(pool),
        pool=pool,
        agent_id=agent_id,
        generation=state.next_generation(),
        created_at=time.time(),
        port=port,
        memory_mb=memory_mb,
    )
    state.create_nodes([rec])
    ctx.events.emit(
        EventType.SPAWN_REQUESTED,
        f"node {rec.node_id} requested on {agent_id}",
        agent_id=agent_id,
        node_id=rec.node_id,
        pool=pool,
        source="cli",
    )
    ctx.send_task(TaskName.SPAWN_NODE, [rec.node_id], naming.agent_queue(agent_id))
    if not wait:
        click.echo(rec.node_id)
        return

    def progress() -> tuple[bool, str]:
        now = state.node(rec.node_id)
        status = now.status if now else "gone"
        return status in (
            NodeStatus.RUNNING,
            NodeStatus.FAILED,
            "gone",
        ), f"node {rec.node_id}: {status}"

    if not wait_until(progress, timeout):
        fail(f"node {rec.node_id} did not start within {timeout:.0f}s", code=1)
    final = state.node(rec.node_id)
    if final is None or final.status != NodeStatus.RUNNING:
        fail(f"node {rec.node_id} failed: {final.error if final else 'removed'}", code=1)
    click.echo(f"{rec.node_id} running at {final.endpoint}")


@click.command()
@click.argument("node_id")
@wait_option
@timeout_option
@pass_ctx
def stop(ctx: Context, node_id: str, wait: bool, timeout: float) -> None:
    """Stop one node. A node of a scaled pool is replaced: use `grid scale` to shrink."""
    state = ctx.state
    rec = known_node(state, node_id)
    state.update_node(rec.agent_id, node_id, status=NodeStatus.STOPPING)
    ctx.events.emit(
        EventType.STOP_REQUESTED,
        f"node {node_id} asked to stop",
        agent_id=rec.agent_id,
        node_id=node_id,
        pool=rec.pool,
        source="cli",
    )
    ctx.send_task(TaskName.STOP_NODE, [node_id], naming.agent_queue(rec.agent_id))
    if wait and not wait_until(
        lambda: (state.node(node_id) is None, f"stopping {node_id}"), timeout
    ):
        fail(f"node {node_id} did not stop within {timeout:.0f}s", code=1)
    click.echo(f"{node_id} stopped" if wait else f"{node_id} stopping")
    if rec.pool in state.desired():
        click.echo(f"pool {rec.pool} keeps its size: the master starts a replacement", err=True)


def _set_draining(ctx: Context, agent_id: str, draining: bool) -> GridState:
    state = ctx.state
    known_agent(state, agent_id)
    state.update_agent(agent_id, draining=draining)
    kind = EventType.AGENT_DRAINING if draining else EventType.AGENT_UNDRAINED
    ctx.events.emit(
        kind,
        f"agent {agent_id} {'draining' if draining else 'accepting nodes again'}",
        agent_id=agent_id,
    )
    return state


@click.command()
@click.argument("agent_id")
@wait_option
@timeout_option
@pass_ctx
def drain(ctx: Context, agent_id: str, wait: bool, timeout: float) -> None:
    """Move an agent's nodes elsewhere and stop placing nodes on it."""
    state = _set_draining(ctx, agent_id, True)
    if leader(state) is None:
        fail("no master is running to move the nodes", code=1)
    ctx.send_task(TaskName.RECONCILE, [f"drain {agent_id}"], naming.MASTER_QUEUE)

    def progress() -> tuple[bool, str]:
        left = [n for n in state.nodes(agent_id=agent_id) if n.pool in state.desired()]
        return not left, f"agent {agent_id}: {len(left)} node(s) left to move"

    if wait and not wait_until(progress, timeout):
        fail(
            f"agent {agent_id} still has nodes after {timeout:.0f}s (is there room elsewhere?)",
            code=1,
        )
    click.echo(f"agent {agent_id} drained" if wait else f"agent {agent_id} draining")


@click.command()
@click.argument("agent_id")
@pass_ctx
def undrain(ctx: Context, agent_id: str) -> None:
    """Let the master place nodes on a drained agent again."""
    _set_draining(ctx, agent_id, False)
    click.echo(f"agent {agent_id} accepts nodes again")


COMMANDS = [scale, spawn, stop, drain, undrain]
