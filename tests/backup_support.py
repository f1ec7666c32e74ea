"""What the backup tests share: a second, fresh Redis, the real `grid` script, and a
snapshot of every key of a Redis read independently of the backup code (plain redis-py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from grid.core.redis_server import EmbeddedRedis
from tests.helpers import run_grid


@contextmanager
def fresh_redis(folder: Path) -> Iterator[EmbeddedRedis]:
    """A second real redis-server, empty, stopped at the end."""
    server = EmbeddedRedis(data_dir=folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def grid_cli(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return run_grid(list(args), env, timeout=timeout)


def raw(url: str) -> redis.Redis[bytes]:
    return redis.Redis.from_url(url)


def snapshot(url: str, pattern: str = "grid:*") -> dict[bytes, tuple[str, Any]]:
    """key -> (type, value) of every key matching `pattern`, read in pipelines."""
    client = raw(url)
    try:
        keys = sorted(client.keys(pattern))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)  # type: ignore[no-untyped-call]
        kinds = [k.decode() for k in pipe.execute()]
        pipe = client.pipeline(transaction=False)
        for key, kind in zip(keys, kinds, strict=True):
            READ[kind](pipe, key)
        values = pipe.execute()
        return {
            key: (kind, _stream(client, key, value) if kind == "stream" else value)
            for key, kind, value in zip(keys, kinds, values, strict=True)
        }
    finally:
        client.close()


READ: dict[str, Any] = {
    "string": lambda p, k: p.get(k),
    "list": lambda p, k: p.lrange(k, 0, -1),
    "set": lambda p, k: p.smembers(k),
    "zset": lambda p, k: p.zrange(k, 0, -1, withscores=True),
    "hash": lambda p, k: p.hgetall(k),
    "stream": lambda p, k: p.xrange(k),
}


def _stream(client: redis.Redis[bytes], key: bytes, entries: Any) -> Any:
    info = client.xinfo_stream(key)
    groups = client.xinfo_groups(key)  # type: ignore[no-untyped-call]
    return entries, info["last-generated-id"], [(g["name"], g["last-delivered-id"]) for g in groups]


def ttls(url: str, pattern: str = "grid:*") -> dict[bytes, int]:
    client = raw(url)
    try:
        return {k: client.pttl(k) for k in client.keys(pattern)}
    finally:
        client.close()
