"""`grid up`: a whole local grid on an embedded Redis, and nothing left after Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from grid.core.state import NodeRecord
from tests.gridproc import FAST_TIMINGS, LocalGrid, home_processes, node_processes, wait_gone
from tests.helpers import wait_for


def test_up_scale_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / ".grid"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRID_")}
    env.update(GRID_HOME=str(home), GRID_HTTP_PORT="0", PYTHONUNBUFFERED="1")
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "grid.cli.main", "up", "--agents", "2", "--nodes", "3"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # like a terminal: we signal the command, not our own group
    )
    started: list[int] = []
    try:
        wait_for(lambda: b"grid is up" in (tmp_path / "up.log").read_bytes(), 60, what="grid up")
        info = json.loads((home / "redis.json").read_text())

        def nodes() -> list[dict[str, object]] | None:
            # a second terminal in the same folder finds the grid with no configuration
            out = subprocess.run(
                [sys.executable, "-m", "grid.cli.main", "nodes", "--json"],
                env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            rows: list[dict[str, object]] = json.loads(out.stdout or "[]")
            return rows if len(rows) == 3 and all(r["status"] == "running" for r in rows) else None

        running = wait_for(nodes, 60, interval=0.2, what="3 running nodes")
        assert running is not None
        started = [info["pid"], *(p.pid for p in psutil.Process(up.pid).children(recursive=True))]
        started += [int(str(r["pid"])) for r in running]
        assert all(psutil.pid_exists(pid) for pid in started)

        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(timeout=90) == 0, (tmp_path / "up.log").read_text()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        log.close()
    text = (tmp_path / "up.log").read_text()
    assert "grid stopped" in text
    left = [
        pid
        for pid in started
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
    ]
    assert not left, f"left running after Ctrl-C: {left}"
    assert not (home / "redis.json").exists()


# ---- supervision: what dies is restarted; only Ctrl-C or a crash loop ends `grid up` ----

# Fast heartbeats, but an agent restarting on 2 busy cores must not be declared offline
# (its nodes would be moved instead of adopted).
UP_TIMINGS = {**FAST_TIMINGS, "GRID_DEGRADED_AFTER": "6", "GRID_OFFLINE_AFTER": "12"}


class GridUp:
    """`grid up` run from its own folder as a user would, signalled as a terminal would;
    `view` watches its grid (Redis, events, node processes) once it is up."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.home = tmp_path / ".grid"
        self.log_path = tmp_path / "up.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("GRID_")}
        self.env = {**base, **UP_TIMINGS, "GRID_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        self.env.update(env or {})
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "grid.cli.main", "up", *args],
                env=self.env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._view: LocalGrid | None = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_up(self) -> LocalGrid:
        wait_for(lambda: "grid is up" in self.output() or self.proc.poll() is not None, 90)
        assert self.proc.poll() is None, self.output()
        url = json.loads((self.home / "redis.json").read_text())["url"]
        self._view = LocalGrid(url, self.home, timings=UP_TIMINGS)
        return self._view

    def restarted(self, process: str) -> dict[str, Any]:
        """The data of the first `process_restarted` event of `process`."""

        def find() -> dict[str, Any] | None:
            assert self._view is not None
            with contextlib.suppress(redis.RedisError):
                for fields in self._view.events("process_restarted"):
                    data: dict[str, Any] = json.loads(fields["data"])
                    if data["process"] == process:
                        return data
            return None

        found = wait_for(find, 60, interval=0.1, what=f"process_restarted of {process}")
        assert found is not None
        return found

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"grid up still runs after {timeout}s:\n{self.output()}")

    def interrupt(self) -> None:
        """Ctrl-C: `grid up` stops everything and exits 0."""
        self.proc.send_signal(signal.SIGINT)
        assert self.wait_exit(90) == 0, self.output()
        assert self.output().rstrip().endswith("grid stopped")

    def close(self) -> None:
        """End whatever still runs (a failed test), then assert nothing was left."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self._view is not None:
            self._view.client.close()
        left = home_processes(self.home)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        assert not left, f"left running: {[(p.pid, p.name()) for p in left]}"


@pytest.fixture
def grid_up(tmp_path: Path) -> Iterator[Callable[..., GridUp]]:
    runs: list[GridUp] = []

    def start(*args: str, env: dict[str, str] | None = None) -> GridUp:
        runs.append(GridUp(tmp_path, *args, env=env))
        return runs[-1]

    yield start
    for run in runs:
        run.close()


def _settled(view: LocalGrid, size: int) -> list[NodeRecord]:
    """`size` running nodes, served by exactly `size` grid-node processes: theirs."""

    def check() -> list[NodeRecord] | None:
        with contextlib.suppress(redis.RedisError):
            nodes = view.running()
            pids = sorted(p.pid for p in view.node_processes())
            if len(nodes) == size and sorted(n.pid or 0 for n in nodes) == pids:
                return nodes
        return None

    found = wait_for(check, 90, interval=0.1, what=f"{size} running nodes, {size} processes")
    assert found is not None
    return found


def test_killed_agent_is_restarted_and_adopts_its_nodes(
    grid_up: Callable[..., GridUp],
) -> None:
    up = grid_up("--agents", "2")
    view = up.wait_up()
    assert view.cli("scale", "--nodes", "4").returncode == 0
    nodes = _settled(view, 4)
    victim = max(("agent-1", "agent-2"), key=lambda a: sum(n.agent_id == a for n in nodes))
    its_nodes = {n.node_id: n.pid for n in nodes if n.agent_id == victim}
    agent = view.state.agent(victim)
    assert agent is not None and agent.pid and its_nodes

    os.kill(agent.pid, signal.SIGKILL)

    restart = up.restarted(victim)
    assert (restart["signal"], restart["exit_code"], restart["attempt"]) == ("SIGKILL", -9, 1)
    assert f"{victim} killed by SIGKILL; restarting it in 0.5s" in up.output()
    adopted = wait_for(
        lambda: {e["node_id"] for e in view.events("node_adopted")} >= set(its_nodes),
        60,
        what=f"{victim} adopting {sorted(its_nodes)}",
    )
    assert adopted
    nodes = _settled(view, 4)
    assert {n.node_id: n.pid for n in nodes if n.node_id in its_nodes} == its_nodes  # the same
    back = view.state.agent(victim)
    assert back is not None and back.pid == restart["pid"] != agent.pid
    assert up.proc.poll() is None and "stopping the grid" not in up.output()

    up.interrupt()
    assert list(node_processes(up.home)) == []


def test_killed_redis_is_restarted_and_the_grid_carries_on(
    grid_up: Callable[..., GridUp],
) -> None:
    up = grid_up("--agents", "2", "--nodes", "4")
    view = up.wait_up()
    _settled(view, 4)
    info = json.loads((up.home / "redis.json").read_text())
    # appendfsync everysec: a kill -9 keeps what is on disk; everything before this is
    view.client.set("grid:test:marker", "on disk")
    aof = up.home / "redis"
    wait_for(
        lambda: any(b"on disk" in p.read_bytes() for p in aof.glob("appendonly*.aof*")),
        5,
        what="the marker in the append-only file",
    )

    os.kill(info["pid"], signal.SIGKILL)

    restart = up.restarted("redis")
    assert (restart["signal"], restart["exit_code"]) == ("SIGKILL", -9)
    assert json.loads((up.home / "redis.json").read_text()) == {
        **info,
        "pid": restart["pid"],
        "create_time": psutil.Process(restart["pid"]).create_time(),
    }  # the same URL: port and data dir
    _settled(view, 4)
    # the master and the agents act again on the restarted Redis
    assert view.cli("scale", "--nodes", "5").returncode == 0
    _settled(view, 5)
    assert up.proc.poll() is None and "stopping the grid" not in up.output()

    up.interrupt()
    assert list(node_processes(up.home)) == []


def test_a_child_that_keeps_failing_stops_the_grid(grid_up: Callable[..., GridUp]) -> None:
    with socket.socket() as busy:  # Flower's port is taken: it exits at each start
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        up = grid_up("--agents", "1", "--flower", "--flower-port", str(port))
        code = up.wait_exit(180)

    lines = up.output().rstrip().splitlines()
    assert code == 1, lines
    assert lines[-1].startswith("grid: flower keeps failing: 6 exits within 60s, the last one ")
    assert "Address already in use" in lines[-1]
    assert lines[-2] == "grid stopped"
    delays = re.findall(
        r"^flower exited with code 1: .*; restarting it in (\S+)s$", "\n".join(lines), re.M
    )
    assert delays[:5] == ["0.5", "1.0", "2.0", "4.0", "8.0"]  # exponential backoff
    restarts = sum(line.startswith("flower restarted, pid ") for line in lines)
    assert restarts == len(delays) >= 5


def test_pages_on_another_port_when_theirs_is_taken(grid_up: Callable[..., GridUp]) -> None:
    with socket.socket() as busy:  # another grid's pages on this machine
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        up = grid_up("--agents", "0", env={"GRID_HTTP_PORT": str(taken)})
        up.wait_up()

        found = re.search(r"dashboard at (http://127\.0\.0\.1:(\d+))", up.output())
        assert found is not None, up.output()
        url, port = found.group(1), int(found.group(2))
        assert port != taken
        master_log = (up.home / "logs" / "master.log").read_text()
        assert f"master pages: port {taken} is taken; serving on {url}" in master_log
        with urllib.request.urlopen(f"{url}/api/status", timeout=10) as resp:
            assert resp.status == 200
            assert json.loads(resp.read())["leader"]

    up.interrupt()


def test_ctrl_c_right_after_an_agent_died_stops_its_orphaned_nodes(
    grid_up: Callable[..., GridUp],
) -> None:
    up = grid_up("--agents", "1", "--nodes", "2")
    view = up.wait_up()
    nodes = _settled(view, 2)
    agent = view.state.agent("agent-1")
    assert agent is not None and agent.pid

    os.kill(agent.pid, signal.SIGKILL)
    wait_gone(agent.pid)
    up.interrupt()  # before the restart (0.5 s): no agent is left to stop the nodes

    ids = ", ".join(sorted(n.node_id for n in nodes))
    assert f"stopped 2 node(s) left running by the agents: {ids}" in up.output()
    assert list(node_processes(up.home)) == []


def test_killed_master_is_restarted_and_leads_again(grid_up: Callable[..., GridUp]) -> None:
    up = grid_up("--agents", "1", "--nodes", "1")
    view = up.wait_up()
    _settled(view, 1)
    old = view.wait_leader()
    master = next(p for p in psutil.Process(up.proc.pid).children() if "master" in p.cmdline())

    master.kill()

    restart = up.restarted("master")
    assert (restart["signal"], restart["attempt"]) == ("SIGKILL", 1)
    # the new master leads once the dead one's lease ran out, and says where its pages are
    found = wait_for(
        lambda: re.search(r"^master leads again, dashboard at (http://\S+)$", up.output(), re.M),
        60,
        what="the restarted master leading",
    )
    assert found is not None
    with urllib.request.urlopen(f"{found.group(1)}/api/status", timeout=10) as resp:
        assert json.loads(resp.read())["leader"] == f"{socket.gethostname()}-{restart['pid']}"
    assert view.wait_leader() != old
    # and it acts: a scale-up is placed and started
    assert view.cli("scale", "--nodes", "2").returncode == 0
    _settled(view, 2)

    up.interrupt()


def test_simulated_agents_join_a_grid_up_with_no_agents(grid_up: Callable[..., GridUp]) -> None:
    """`grid up --agents 0` is a master and Redis only; `grid sim` joins from another
    terminal and runs what `grid scale` asks for; both stop cleanly."""
    up = grid_up("--agents", "0")
    view = up.wait_up()
    assert view.state.agents() == []
    view.start_sim("sim", "--agents", "20", "--nodes-per-agent", "3")
    try:
        view.wait_agents(*(f"sim-{i:05d}" for i in range(1, 21)), timeout=60)
        scaled = view.cli("scale", "--nodes", "40", "--timeout", "60s")
        assert scaled.returncode == 0, scaled.stderr
        running = view.running()
        assert len(running) == 40 and {n.platform for n in running} == {"sim"}
        assert max(Counter(n.agent_id for n in running).values()) <= 3
    finally:
        assert view.stop("sim", timeout=60) == 0, view.log("sim")[-2000:]
    assert view.state.agents() == [], "every simulated agent unregistered"
    up.interrupt()
