"""Chaos fixtures: grids on the session Redis or on a private one, and a network namespace.

Everything a fixture creates it removes in its finalizer, also when the test fails:
grid processes (by PID), redis-server (by PID), the namespace and its veth pair.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from grid.core.ports import free_port
from grid.core.redis_server import EmbeddedRedis, find_redis_server, ping
from tests.chaos.harness import ChaosGrid
from tests.helpers import require, wait_for

GridFactory = Callable[..., ChaosGrid]


@pytest.fixture
def chaos(redis_url: str, tmp_path: Path) -> Iterator[GridFactory]:
    """`chaos(env=..., url=...)` makes a ChaosGrid (default: the session Redis, flushed).

    Tests that pass `url=` of a private Redis must request that fixture *before* this one,
    so the grid is closed while its Redis still runs.
    """
    grids: list[ChaosGrid] = []

    def make(env: dict[str, str] | None = None, url: str | None = None) -> ChaosGrid:
        grid = ChaosGrid(url or redis_url, tmp_path / f"home{len(grids)}", env)
        grids.append(grid)
        return grid

    yield make
    leaked: list[int] = []
    for grid in reversed(grids):
        leaked += grid.close()
    assert not leaked, f"node processes left behind: {leaked}"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A private append-only Redis for this test only (it gets stopped, killed, restarted)."""
    server = EmbeddedRedis(data_dir=tmp_path / "own-redis")
    server.start()
    yield server
    server.kill()


# ---- network namespace --------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


@dataclass
class NetNS:
    """A namespace joined to the host by one veth pair: host_ip <-> ns_ip (a /30)."""

    name: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def heal(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def pids(self) -> list[int]:
        out = _ip("netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split()]


@pytest.fixture
def netns() -> Iterator[NetNS]:
    require(
        shutil.which("ip") is not None and os.geteuid() == 0, "ip netns needs root and iproute2"
    )
    tag = f"{os.getpid() % 100000}"
    in_use = _ip("-4", "-o", "addr", "show").stdout
    octet = next(
        o for i in range(250) if f"10.231.{(o := (os.getpid() + i) % 250 + 1)}." not in in_use
    )
    ns = NetNS(
        name=f"gridchaos-{tag}",
        host_if=f"gch{tag}h",
        ns_if=f"gch{tag}n",
        host_ip=f"10.231.{octet}.1",
        ns_ip=f"10.231.{octet}.2",
    )
    created = _ip("netns", "add", ns.name, check=False)
    require(created.returncode == 0, f"ip netns add not permitted: {created.stderr.strip()}")
    try:
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
        _ip("link", "set", ns.ns_if, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
        _ip("link", "set", ns.host_if, "up")
        _ip("-n", ns.name, "addr", "add", f"{ns.ns_ip}/30", "dev", ns.ns_if)
        _ip("-n", ns.name, "link", "set", ns.ns_if, "up")
        _ip("-n", ns.name, "link", "set", "lo", "up")
        yield ns
    finally:
        # Only our own processes can live in our private namespace: end any left there.
        for pid in ns.pids():
            try:
                os.kill(pid, signal.SIGKILL)
                psutil.Process(pid).wait(timeout=5)
            except (ProcessLookupError, psutil.Error):
                pass
        _ip("link", "del", ns.host_if, check=False)
        _ip("netns", "del", ns.name, check=False)


@pytest.fixture
def ns_redis(netns: NetNS, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A Redis listening on loopback and on the host end of the veth: (host url, ns url)."""
    port = free_port()
    data = tmp_path / "ns-redis"
    data.mkdir()
    proc = subprocess.Popen(
        [
            find_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            netns.host_ip,
            "--protected-mode",
            "no",
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "redis.log",
            "--maxclients",
            "2000",
        ],  # fmt: skip
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        host_url = f"redis://127.0.0.1:{port}/0"
        wait_for(lambda: proc.poll() is not None or ping(host_url, 0.2), 10, what="ns redis up")
        assert proc.poll() is None, (data / "redis.log").read_text(errors="replace")[-500:]
        yield host_url, f"redis://{netns.host_ip}:{port}/0"
    finally:
        proc.kill()
        proc.wait(timeout=10)
