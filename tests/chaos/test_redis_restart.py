"""Redis restarted (cleanly, and after kill -9) under a running grid: everyone reconnects."""

from __future__ import annotations

from grid.core.redis_server import EmbeddedRedis
from tests.chaos.conftest import GridFactory
from tests.chaos.harness import assert_all_alive, assert_invariants, quiet
from tests.helpers import wait_for


def _aof_holds(server: EmbeddedRedis, pool: str, size: int) -> bool:
    """The append-only file on disk holds the write of this desired size."""
    value = str(size).encode()
    cmd = b"$10\r\ngrid:pools\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(pool),
        pool.encode(),
        len(value),
        value,
    )
    return any(cmd in path.read_bytes() for path in server.data_dir.glob("appendonly*.aof*"))


def test_redis_restart_during_scale(own_redis: EmbeddedRedis, chaos: GridFactory) -> None:
    grid = chaos(url=own_redis.url)
    grid.up()
    mark = grid.mark()
    grid.scale(10)
    grid.wait_event("spawn_requested", since=mark, count=1)

    own_redis.stop()  # SIGTERM: Redis flushes its append-only file
    own_redis.start()
    assert wait_for(quiet(grid.state.desired), 10, what="desired state readable") == {"default": 10}
    grid.wait_settled(timeout=60)
    # agents heartbeat again and the master acts again, all by themselves
    grid.wait_agents("agent-1", "agent-2", timeout=30)
    grid.scale(12)
    grid.wait_settled(timeout=60)
    assert_all_alive(grid)
    assert_invariants(grid)


def test_redis_killed_keeps_desired_state(own_redis: EmbeddedRedis, chaos: GridFactory) -> None:
    grid = chaos(url=own_redis.url)
    grid.up()
    grid.scale(4)
    grid.wait_settled()
    grid.scale(8)
    # appendfsync everysec: what reached the file survives kill -9 of the server
    wait_for(lambda: _aof_holds(own_redis, "default", 8), 5, what="desired size in the AOF")
    own_redis.kill()
    own_redis.start()
    assert wait_for(quiet(grid.state.desired), 10, what="desired state readable") == {"default": 8}
    grid.wait_settled(timeout=60)
    grid.wait_agents("agent-1", "agent-2", timeout=30)
    assert_all_alive(grid)
    assert_invariants(grid)
