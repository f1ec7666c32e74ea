"""`grid up`'s supervisor on real processes: backoff, good runs, giving up, stopping, Redis."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from grid.cli.supervisor import (
    Child,
    ChildFailing,
    Command,
    RedisChild,
    Restart,
    RestartPolicy,
    Supervisor,
)
from grid.core.redis_server import EmbeddedRedis, discover
from tests.helpers import wait_for

SLEEPER = "import time; print('ready', flush=True); time.sleep(120)"


class Run:
    """A supervisor whose lines and restarts the test reads; `close()` stops everything."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.said: list[str] = []
        self.restarts: list[Restart] = []
        self.supervisor = Supervisor(policy, self.said.append, self.restarts.append)
        self.names: list[str] = []
        self.pids: set[int] = set()

    def start(self, child: Child) -> int:
        pid = self.supervisor.start(child)
        self.names.append(child.name)
        self.pids.add(pid)
        return pid

    def restarted(self, count: int) -> Restart:
        """Supervise until the `count`-th restart; that restart."""

        def done() -> bool:
            self.supervisor.check()
            return len(self.restarts) >= count

        wait_for(done, 30, what=f"restart number {count}")
        self.pids.add(self.restarts[-1].pid)
        return self.restarts[-1]

    def close(self) -> None:
        self.supervisor.stop(self.names, timeout=5)
        left = [pid for pid in self.pids if _alive(pid)]
        assert not left, f"left running: {left}"


MakeRun = Callable[[RestartPolicy], Run]


@pytest.fixture
def run() -> Iterator[MakeRun]:
    """Makes supervisors; asserts at the end that none left a process running."""
    runs: list[Run] = []

    def make(policy: RestartPolicy) -> Run:
        runs.append(Run(policy))
        return runs[-1]

    yield make
    for r in runs:
        r.close()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _python(tmp_path: Path, name: str, code: str) -> Command:
    return Command(name, [sys.executable, "-c", code], dict(os.environ), tmp_path / f"{name}.log")


def _give_up(supervisor: Supervisor) -> str:
    try:
        supervisor.check()
    except ChildFailing as exc:
        return str(exc)
    return ""


def test_crash_loop_backs_off_then_gives_up_naming_the_child(run: MakeRun, tmp_path: Path) -> None:
    policy = RestartPolicy(
        backoff_base=0.1, backoff_max=0.2, healthy_after=30, max_failures=3, window=30
    )
    r = run(policy)
    r.start(_python(tmp_path, "crasher", "print('disk full'); raise SystemExit(3)"))

    message = wait_for(lambda: _give_up(r.supervisor), 30, what="the supervisor to give up")

    assert message == (
        "crasher keeps failing: 4 exits within 30s, the last one exited with code 3: disk full"
    )
    assert [line for line in r.said if "restarting" in line] == [
        "crasher exited with code 3: disk full; restarting it in 0.1s",
        "crasher exited with code 3: disk full; restarting it in 0.2s",
        "crasher exited with code 3: disk full; restarting it in 0.2s",
    ]
    assert [(x.attempt, x.exit_code, x.signal) for x in r.restarts] == [
        (1, 3, ""),
        (2, 3, ""),
        (3, 3, ""),
    ]
    r.pids.update(x.pid for x in r.restarts)


@pytest.mark.parametrize(("healthy_after", "attempts"), [(0.0, [1, 1]), (60.0, [1, 2])])
def test_killed_child_restarts_and_a_good_run_resets_the_backoff(
    run: MakeRun, tmp_path: Path, healthy_after: float, attempts: list[int]
) -> None:
    r = run(RestartPolicy(backoff_base=0.1, backoff_max=1, healthy_after=healthy_after))
    child = _python(tmp_path, "sleeper", SLEEPER)
    pid = r.start(child)
    seen = [pid]
    for n in (1, 2):
        os.kill(seen[-1], signal.SIGKILL)
        restart = r.restarted(n)
        assert restart.exit_code == -signal.SIGKILL and restart.signal == "SIGKILL"
        assert restart.why == "killed by SIGKILL"
        assert restart.pid not in seen and _alive(restart.pid)
        assert child.process is not None and child.process.pid == restart.pid
        seen.append(restart.pid)
    assert [x.attempt for x in r.restarts] == attempts


def test_stop_kills_a_child_that_ignores_sigterm(run: MakeRun, tmp_path: Path) -> None:
    r = run(RestartPolicy())
    code = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + SLEEPER
    child = _python(tmp_path, "stubborn", code)
    pid = r.start(child)
    wait_for(lambda: "ready" in child.log.read_text(), 10, what="the child to ignore SIGTERM")

    r.supervisor.stop({"stubborn"}, timeout=0.5)

    assert not _alive(pid)
    assert r.said == ["stubborn did not stop in time: killing it"]
    r.supervisor.check()  # stopped for good: not restarted
    assert r.restarts == []


def _aof_holds(server: EmbeddedRedis, text: str) -> bool:
    return any(text.encode() in p.read_bytes() for p in server.data_dir.glob("appendonly*.aof*"))


def test_killed_redis_comes_back_on_its_port_with_its_data(run: MakeRun, tmp_path: Path) -> None:
    home = tmp_path / ".grid"
    server = EmbeddedRedis(data_dir=home / "redis")
    r = run(RestartPolicy(backoff_base=0.1))
    old_pid = r.start(RedisChild(server, home))
    url = server.url
    assert discover(home) == url
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        client.set("grid:test:kept", "survives kill -9")
        # appendfsync everysec: wait until the write is on disk, as a kill -9 keeps only that
        wait_for(lambda: _aof_holds(server, "survives kill -9"), 5, what="the write in the AOF")
        os.kill(old_pid, signal.SIGKILL)

        restart = r.restarted(1)

        assert restart.name == "redis" and restart.signal == "SIGKILL"
        assert server.url == url  # the same port: clients reconnect by themselves
        assert discover(home) == url  # redis.json names the new process
        assert client.get("grid:test:kept") == "survives kill -9"
    finally:
        client.close()
