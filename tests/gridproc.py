"""A real local grid for tests: master and agent processes on the test Redis.

Every process is started here and ended here by PID; `close()` also ends any node process
still recorded under this grid's home (and the test then fails on the leak). `bench/core.py`
and `bench/chaos.py` drive their grids through it too, so nothing here may need a fixture.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any, Self

import psutil
import redis

from grid.core import naming
from grid.core.connection import redis_client
from grid.core.rtypes import Redis
from grid.core.state import GridState, NodeRecord
from tests.helpers import wait_for

FAST_TIMINGS = {
    "GRID_HEARTBEAT_INTERVAL": "0.5",
    "GRID_DEGRADED_AFTER": "1.5",
    "GRID_OFFLINE_AFTER": "3",
    "GRID_LEASE_TTL": "3",
    "GRID_HEALTH_INTERVAL": "0.5",
    "GRID_RECONCILE_INTERVAL": "1",
    "GRID_RESTART_BACKOFF_BASE": "0.2",
    "GRID_STOP_GRACE": "3",
    "GRID_HTTP_PORT": "0",
}


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM (a warm shutdown), SIGKILL to its process group after `timeout`; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


class LocalGrid:
    """Master and agent processes of one grid (its own GRID_HOME) on a Redis.

    `timings` are the GRID_* settings every process gets, FAST_TIMINGS for tests by default;
    `timings=None` runs the grid's own defaults, and then none of this process's GRID_*
    variables is passed on either. `env` is applied last, over both.
    """

    def __init__(
        self,
        redis_url: str,
        home: Path,
        env: dict[str, str] | None = None,
        *,
        timings: Mapping[str, str] | None = FAST_TIMINGS,
    ) -> None:
        self.redis_url = redis_url
        self.home = home
        inherited = {
            k: v for k, v in os.environ.items() if timings is not None or not k.startswith("GRID_")
        }
        self.env = {
            **inherited,
            "GRID_REDIS_URL": redis_url,
            "GRID_HOME": str(home),
            "PYTHONUNBUFFERED": "1",
            **(timings or {}),
            **(env or {}),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.client: Redis = redis_client(redis_url)
        self.state = GridState(self.client)
        # events (and metrics) may live on their own Redis (GRID_EVENTS_URL)
        events_url = self.env.get("GRID_EVENTS_URL")
        self.events_client: Redis = redis_client(events_url) if events_url else self.client
        (home / "logs").mkdir(parents=True, exist_ok=True)

    # ---- processes ------------------------------------------------------------------

    def _start(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.home / "logs" / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "grid.cli.main", *args],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def start_master(self, name: str = "master") -> subprocess.Popen[bytes]:
        return self._start(name, ["master", "--id", name])

    def start_agent(
        self, agent_id: str, max_nodes: int = 10, *extra: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return self._start(
            agent_id, ["agent", "--id", agent_id, "--max-nodes", str(max_nodes), *extra], env
        )

    def start_sim(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """`grid sim ARGS`: many simulated agents in one process (log in logs/NAME.log)."""
        return self._start(name, ["sim", *args])

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "grid.cli.main", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def log(self, name: str) -> str:
        return (self.home / "logs" / f"{name}.log").read_text(errors="replace")

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.kill(proc.pid, sig)

    def kill(self, name: str) -> None:
        """kill -9 one of our processes (its nodes live on: they have their own group)."""
        self.signal(name, signal.SIGKILL)
        self.procs[name].wait(timeout=10)

    def stop(self, name: str, timeout: float = 60) -> int:
        return stop_process(self.procs[name], timeout)

    # ---- waiting ----------------------------------------------------------------------

    def wait_leader(self, timeout: float = 30) -> str:
        """The lease holder, once it has taken office: its `leader_elected` event is written
        (a moment after it takes the lease), so a test's later events are its own."""

        def holder() -> str | None:
            value = self.client.get(naming.leader_key())
            if not value:
                return None
            master_id = str(value).split("|", 1)[0]
            elected = {
                json.loads(e["data"]).get("master_id") for e in self.events("leader_elected")
            }
            return str(value) if master_id in elected else None

        return str(wait_for(holder, timeout, what="a leading master"))  # not None: it waited

    def wait_agents(self, *agent_ids: str, timeout: float = 30) -> None:
        def online() -> bool:
            status = {a.agent_id: a.status for a in self.state.agents()}
            return all(status.get(a) == "online" for a in agent_ids)

        wait_for(online, timeout, what=f"agents {agent_ids} online")

    def running(self, pool: str = "default") -> list[NodeRecord]:
        return [n for n in self.state.nodes(pool=pool) if n.status == "running"]

    def wait_pool(self, size: int, pool: str = "default", timeout: float = 60) -> list[NodeRecord]:
        """Wait until exactly `size` nodes of the pool exist and all run."""

        def settled() -> list[NodeRecord] | None:
            nodes = self.state.nodes(pool=pool)
            if len(nodes) == size and all(n.status == "running" for n in nodes):
                return nodes or [NodeRecord(node_id="none")]
            return None

        result = wait_for(settled, timeout, interval=0.05, what=f"pool {pool} at {size} running")
        return [n for n in result or [] if n.node_id != "none"]  # not None: it waited

    def events(self, type_: str) -> list[dict[str, Any]]:
        rows = self.events_client.xrange(naming.events_key())
        return [f for _, f in rows if f.get("type") == type_]

    # ---- node processes ------------------------------------------------------------

    def node_processes(self) -> Iterator[psutil.Process]:
        return node_processes(self.home)

    def close(self) -> list[int]:
        """Stop agents, then masters; end leftovers. Returns pids of node processes left."""
        agents = [n for n in self.procs if not n.startswith("master")]
        for name in agents:
            with suppress(ProcessLookupError):
                self.signal(name, signal.SIGTERM)
        for name in agents:
            self.stop(name)
        for name in list(self.procs):
            self.stop(name)
        leaked = []
        for proc in self.node_processes():
            leaked.append(proc.pid)
            with suppress(psutil.Error):
                proc.kill()
        self.client.close()
        self.events_client.close()
        return leaked


def node_processes(home: Path) -> Iterator[psutil.Process]:
    """grid-node processes whose data dir lies under `home`."""
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if any("grid-node" in part or "grid.node.server" in part for part in cmd[:3]) and any(
            part.startswith(str(home)) for part in cmd
        ):
            yield proc


def home_processes(home: Path) -> list[psutil.Process]:
    """Live processes of the grid in `home`: whatever runs with GRID_HOME=home in its
    environment (`grid up`, its children and the embedded Redis, their nodes)."""
    found = []
    for proc in psutil.process_iter():
        with suppress(psutil.Error):
            if (
                proc.environ().get("GRID_HOME") == str(home)
                and proc.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(proc)
    return found


def wait_gone(pid: int, timeout: float = 10) -> None:
    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(gone, timeout, what=f"process {pid} to end")


class BackgroundSampler:
    """Calls `sample()` every `interval` seconds in a thread with its own Redis client, while
    used as a context manager; a Redis error skips one sample (Redis may be restarting)."""

    def __init__(self, redis_url: str, interval: float) -> None:
        self.client = redis_client(redis_url)
        self.state = GridState(self.client)
        self.interval = interval
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        wait_for(lambda: self.samples, 5, what=f"a first sample of {type(self).__name__}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
                self.samples += 1
            except redis.RedisError:
                pass
            self._stop.wait(self.interval)
