"""The core grid end to end: real Redis, real master and agent processes, real grid-node servers.

One grid (a master, agent-1 with room for 2 nodes, agent-2 with room for 3) serves every test
of this module, to keep the suite fast; each test leaves it with no node. Scaling 0->5->2->0
is in test_scale.py.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from celery import Celery
from click.testing import CliRunner

from grid.cli.main import cli
from grid.core import naming
from grid.core.celery_app import configure
from grid.core.redis_server import EmbeddedRedis
from grid.core.state import NodeRecord
from grid.core.tasknames import TaskName
from tests.gridproc import LocalGrid, wait_gone
from tests.helpers import NODE_FIELDS, wait_for

MAX_NODES = {"agent-1": 2, "agent-2": 3}
# Heartbeats stay fast, but a loaded machine (2 shared cores) must not flap agents to degraded.
CALM = {"GRID_DEGRADED_AFTER": "6", "GRID_OFFLINE_AFTER": "12"}
OCCUPYING = {"pending", "starting", "running", "restarting", "stopping"}


@pytest.fixture(scope="module")
def grid(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalGrid]:
    flush = redis.Redis.from_url(redis_server.url)
    flush.flushall()
    flush.close()
    g = LocalGrid(redis_server.url, tmp_path_factory.mktemp("core") / "home", env=CALM)
    try:
        g.start_master()
        for agent_id, max_nodes in MAX_NODES.items():
            g.start_agent(agent_id, max_nodes)
        g.wait_leader()
        g.wait_agents(*MAX_NODES)
        yield g
    finally:
        leaked = g.close()
    assert not leaked, f"node processes left behind: {leaked}"


@pytest.fixture(scope="module")
def app(grid: LocalGrid) -> Celery:
    return configure(grid.redis_url)


@pytest.fixture(autouse=True)
def no_nodes_between_tests(grid: LocalGrid) -> Iterator[None]:
    wait_for(lambda: grid.state.nodes() == [], timeout=30, what="no node before the test")
    yield
    if grid.state.desired().get("default"):
        assert grid.cli("scale", "--nodes", "0").returncode == 0
    wait_for(lambda: grid.state.nodes() == [], timeout=30, what="no node after the test")


def cli_ok(grid: LocalGrid, *args: str) -> str:
    result = grid.cli(*args)
    assert result.returncode == 0, f"grid {' '.join(args)}: {result.stderr}"
    return result.stdout


def cli_here(grid: LocalGrid, *args: str) -> str:
    """A read command run in this process: the same code as the `grid` script, without a
    second of interpreter start-up per call on a busy machine."""
    env = {"GRID_REDIS_URL": grid.redis_url, "GRID_HOME": str(grid.home)}
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, f"grid {' '.join(args)}: {result.stderr}"
    return result.stdout


def cli_json(grid: LocalGrid, *args: str) -> Any:
    return json.loads(cli_here(grid, *args, "--json"))


def node_processes_for(grid: LocalGrid, node_id: str) -> list[psutil.Process]:
    return [p for p in grid.node_processes() if node_id in (p.info.get("cmdline") or [])]


def node_log(grid: LocalGrid, agent_id: str, node_id: str) -> Path:
    return grid.home / "agents" / agent_id / "nodes" / node_id / "node.log"


def reconcile_now(app: Celery, reason: str) -> dict[str, Any]:
    """Run one reconcile on the leader and wait for its summary (the master is a solo worker:
    anything queued before this ran before it)."""
    result = app.send_task(
        TaskName.RECONCILE, args=[reason], queue=naming.MASTER_QUEUE, ignore_result=False
    )
    try:
        summary: dict[str, Any] = result.get(timeout=30)
    finally:
        result.forget()
    return summary


def call_agent(app: Celery, task: str, agent_id: str, node_id: str) -> Any:
    result = app.send_task(
        task, args=[node_id], queue=naming.agent_queue(agent_id), ignore_result=False
    )
    return result


class CapacityWatch:
    """Samples the node records in a thread: the most nodes each agent ever held at once."""

    def __init__(self, grid: LocalGrid) -> None:
        self.grid = grid
        self.peak: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CapacityWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            held = Counter(n.agent_id for n in self.grid.state.nodes() if n.status in OCCUPYING)
            for agent_id, count in held.items():
                self.peak[agent_id] = max(self.peak[agent_id], count)
            self.samples += 1
            self._stop.wait(0.01)


# ---- agent identity --------------------------------------------------------------------------


def test_agent_id_held_by_a_live_agent_is_refused(grid: LocalGrid) -> None:
    lock = naming.agent_lock_key("agent-1")
    holder = grid.client.get(lock)
    before = grid.state.agent("agent-1")
    result = grid.cli("agent", "--id", "agent-1", "--max-nodes", "7")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "agent-1" in lines[0] and "held by a live agent" in lines[0]
    assert result.stdout == ""
    # the live agent keeps its id, its record and its capacity
    assert grid.client.get(lock) == holder
    after = grid.state.agent("agent-1")
    assert after is not None and before is not None
    assert (after.pid, after.max_nodes, after.registered_at) == (
        before.pid,
        2,
        before.registered_at,
    )
    assert grid.procs["agent-1"].poll() is None


# ---- idempotent tasks ----------------------------------------------------------------------------


def test_double_delivered_spawn_runs_one_process(grid: LocalGrid, app: Celery) -> None:
    node_id = naming.new_node_id("manual")
    rec = NodeRecord(
        node_id=node_id,
        pool="manual",
        agent_id="agent-1",
        generation=grid.state.next_generation(),
        created_at=time.time(),
    )
    grid.state.create_nodes([rec])

    # the same task twice, at once (the agent runs 8 task threads)
    first = call_agent(app, TaskName.SPAWN_NODE, "agent-1", node_id)
    second = call_agent(app, TaskName.SPAWN_NODE, "agent-1", node_id)
    results = sorted(r["result"] for r in (first.get(timeout=60), second.get(timeout=60)))
    assert results == ["already running", "running"]
    # and a late redelivery once it runs
    third = call_agent(app, TaskName.SPAWN_NODE, "agent-1", node_id).get(timeout=30)
    assert third["result"] == "already running"

    node = grid.state.node(node_id)
    assert node is not None and node.status == "running" and node.restart_count == 0
    procs = node_processes_for(grid, node_id)
    assert [p.pid for p in procs] == [node.pid]
    # one process ever: the node log (appended by every start) says "listening" once
    text = node_log(grid, "agent-1", node_id).read_text()
    assert text.count(f"grid-node {node_id} listening") == 1
    succeeded = grid.state.r.xrange(naming.events_key())
    assert (
        sum(1 for _, f in succeeded if f["type"] == "spawn_succeeded" and f["node_id"] == node_id)
        == 1
    )

    out = cli_ok(grid, "stop", node_id)
    assert out.strip() == f"{node_id} stopped"
    assert grid.state.node(node_id) is None
    assert node.pid is not None
    wait_gone(node.pid)

    # stopping an already stopped node succeeds and changes nothing
    events_before = grid.client.xlen(naming.events_key())
    again = call_agent(app, TaskName.STOP_NODE, "agent-1", node_id).get(timeout=30)
    assert again == {"result": "stopped"}
    # a spawn delivered after the stop does not bring it back
    late = call_agent(app, TaskName.SPAWN_NODE, "agent-1", node_id).get(timeout=30)
    assert late["result"] == "ignored"
    assert node_processes_for(grid, node_id) == []
    assert grid.state.node(node_id) is None
    new_events = grid.client.xrange(naming.events_key(), min=f"({_last_id(grid, events_before)}")
    assert [f["type"] for _, f in new_events if f.get("node_id") == node_id] == []


def _last_id(grid: LocalGrid, count: int) -> str:
    """Id of the `count`-th event (the last one seen before an action)."""
    rows = grid.client.xrange(naming.events_key(), count=count)
    return str(rows[-1][0]) if rows else "0-0"


# ---- capacity limits, shortfall, no-op scaling ---------------------------------------------------


def test_capacity_shortfall_reported_then_cleared(grid: LocalGrid, app: Celery) -> None:
    scales_before = len(grid.events("scale_requested"))
    shortfalls_before = len(grid.events("capacity_shortfall"))
    with CapacityWatch(grid) as watch:
        out = grid.cli("scale", "--nodes", "7", "--no-wait")
        assert out.returncode == 0, out.stderr

        def placed() -> bool:
            return len(grid.running()) == 5 and len(grid.state.nodes(pool="default")) == 5

        wait_for(placed, timeout=60, what="5 of 7 nodes running")
        report = wait_for(
            lambda: (r := cli_json(grid, "status"))["pools"]["default"]["shortfall"] == 2 and r,
            timeout=20,
            what="a shortfall of 2 in grid status",
        )
        reconcile_now(app, "settle")  # a few more passes must not place anything more
        reconcile_now(app, "settle again")
    assert watch.samples > 10
    assert all(watch.peak[a] <= MAX_NODES[a] for a in MAX_NODES), watch.peak
    per_agent = Counter(n.agent_id for n in grid.running())
    assert per_agent == MAX_NODES
    assert len(grid.state.nodes(pool="default")) == 5

    pool = report["pools"]["default"]
    assert pool["desired"] == 7 and pool["nodes"] == {"running": 5}
    assert report["agents"]["total"] == 2 and report["agents"]["online"] == 2
    assert report["nodes"]["running"] == 5 and report["nodes"]["total"] == 5
    assert report["cluster"] == "degraded"  # below size, not below half
    shortfalls = grid.events("capacity_shortfall")[shortfalls_before:]
    assert len(shortfalls) == 1  # recorded when it appears, not on every pass
    assert shortfalls[0]["pool"] == "default"
    assert json.loads(shortfalls[0]["data"])["shortfall"] == 2
    events = cli_json(grid, "events", "--type", "capacity_shortfall", "--limit", "1")
    assert [e["data"]["shortfall"] for e in events] == [2]

    # scaling to the size that runs now: the shortfall clears and no task is sent
    running_before = {n.node_id: n.pid for n in grid.running()}
    sent_before = len(grid.events("spawn_requested")), len(grid.events("stop_requested"))
    for _ in range(2):  # from 7 to the 5 that run, then 5 again
        result = grid.cli("scale", "--nodes", "5")
        assert result.returncode == 0, result.stderr
        assert "pool default: 5 nodes running" in result.stdout
        reconcile_now(app, "after scale to the current size")
    status = wait_for(
        lambda: (r := cli_json(grid, "status"))["cluster"] == "healthy" and r,
        timeout=20,
        what="a healthy cluster",
    )
    assert status["pools"]["default"]["shortfall"] == 0
    assert status["pools"]["default"]["desired"] == 5
    assert reconcile_now(app, "idle") == {"changed": False}
    assert (len(grid.events("spawn_requested")), len(grid.events("stop_requested"))) == sent_before
    for agent_id in MAX_NODES:
        assert grid.client.llen(naming.agent_queue(agent_id)) == 0
    assert {n.node_id: n.pid for n in grid.running()} == running_before
    assert len(grid.events("scale_requested")) == scales_before + 3


# ---- the node commands ---------------------------------------------------------------------------


def test_spawn_logs_node_status_nodes_events_stop(grid: LocalGrid) -> None:
    out = cli_ok(grid, "spawn", "--agent", "agent-2")
    node_id, _, endpoint = out.strip().partition(" running at ")
    assert naming.valid_id(node_id) and node_id.startswith("manual-")
    assert endpoint.startswith("http://127.0.0.1:")
    spawned_at = time.time()

    logs = cli_ok(grid, "logs", node_id)
    assert f"grid-node {node_id} listening on {endpoint}" in logs

    report = cli_json(grid, "node-status", node_id)
    assert report["node_id"] == node_id and report["status"] == "running"
    assert report["agent_id"] == "agent-2" and report["endpoint"] == endpoint
    health = report["health"]
    assert health["status"] == "ok" and health["node_id"] == node_id
    assert health["pid"] == report["pid"] and health["port"] == report["port"]
    assert "health         ok (uptime" in cli_here(grid, "node-status", node_id)

    (row,) = cli_json(grid, "nodes")
    assert set(row) >= NODE_FIELDS
    assert (row["node_id"], row["agent_id"], row["pool"], row["status"], row["restart_count"]) == (
        node_id,
        "agent-2",
        "manual",
        "running",
        0,
    )
    assert psutil.Process(row["pid"]).is_running()
    assert row["endpoint"] == endpoint and endpoint.endswith(f":{row['port']}")
    assert cli_json(grid, "nodes", "--agent", "agent-1") == []

    status = cli_json(grid, "status")
    assert status["nodes"]["total"] == 1 and status["nodes"]["running"] == 1
    assert status["agents"]["total"] == 2
    assert status["cluster"] in ("healthy", "degraded", "critical")
    assert status["leader"] == "master"

    def spawn_events(*extra: str) -> list[dict[str, Any]]:
        rows = cli_json(grid, "events", "--type", "spawn_succeeded", "--node", node_id, *extra)
        return list(rows)

    (ev,) = spawn_events()
    assert ev["type"] == "spawn_succeeded" and ev["agent_id"] == "agent-2"
    assert ev["pool"] == "manual" and ev["data"]["endpoint"] == endpoint
    assert ev["data"]["duration_ms"] > 0
    assert len(spawn_events("--since", "10m")) == 1
    # a window that starts after the spawn leaves it out (each CLI call above took a while)
    window_ms = int((time.time() - spawned_at) * 1000 / 2)
    assert window_ms > 50
    assert spawn_events("--since", f"{window_ms}ms") == []

    assert cli_ok(grid, "stop", node_id).strip() == f"{node_id} stopped"
    assert cli_json(grid, "nodes") == []
    types = [e["type"] for e in cli_json(grid, "events", "--node", node_id)]
    assert types == ["spawn_requested", "spawn_succeeded", "stop_requested", "stop_succeeded"]
    wait_gone(int(row["pid"]))
    assert not node_log(grid, "agent-2", node_id).parent.exists()


# ---- shutting agents down ------------------------------------------------------------------


def test_agents_stop_their_nodes_and_unregister_on_sigterm_and_ctrl_c(grid: LocalGrid) -> None:
    """SIGTERM, or SIGINT (Ctrl-C): the agent stops its nodes, unregisters and exits 0."""
    signals = {"agent-term": signal.SIGTERM, "agent-int": signal.SIGINT}
    for agent_id in signals:
        grid.start_agent(agent_id, 5)
    grid.wait_agents(*signals)
    pids: dict[str, list[int]] = {agent_id: [] for agent_id in signals}
    for agent_id in signals:
        for _ in range(2):
            node_id = cli_here(grid, "spawn", "--agent", agent_id).split()[0]
            node = grid.state.node(node_id)
            assert node is not None and node.pid is not None
            pids[agent_id].append(node.pid)
    assert all(psutil.pid_exists(pid) for group in pids.values() for pid in group)

    for agent_id, sig in signals.items():
        grid.signal(agent_id, sig)
    for agent_id in signals:
        assert grid.procs[agent_id].wait(timeout=60) == 0, grid.log(agent_id)
        for pid in pids[agent_id]:
            wait_gone(pid)
        assert grid.state.nodes(agent_id=agent_id) == []
        assert grid.state.agent(agent_id) is None
        assert agent_id not in grid.client.smembers(naming.agents_key())
        assert grid.client.get(naming.agent_lock_key(agent_id)) is None
        stops = [e for e in grid.events("stop_succeeded") if e["agent_id"] == agent_id]
        assert len(stops) == 2
        gone = [e for e in grid.events("agent_unregistered") if e["agent_id"] == agent_id]
        assert len(gone) == 1
        assert f"agent {agent_id} stopped" in grid.log(agent_id)
        assert list((grid.home / "agents" / agent_id / "nodes").iterdir()) == []
    left = {p.pid for p in grid.node_processes()}
    assert not left & {pid for group in pids.values() for pid in group}
    # the other agents carry on
    grid.wait_agents(*MAX_NODES)
