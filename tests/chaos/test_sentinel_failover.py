"""Redis Sentinel: the primary is killed (kill -9) or frozen (SIGSTOP) during a scale; a
replica is promoted and the grid, configured with the Sentinel URL only, finishes the scale
with nothing lost."""

from __future__ import annotations

from collections.abc import Callable

from tests.chaos.conftest import GridFactory
from tests.chaos.harness import ChaosGrid, assert_all_alive, assert_invariants, quiet
from tests.helpers import wait_for
from tests.sentinel import PASSWORD, SentinelSet

AGENTS = ("agent-1", "agent-2")

Fault = Callable[[], int]  # acts on the primary, returns its port


def _scale_through_failover(grid: ChaosGrid, sentinel_set: SentinelSet, fault: Fault) -> None:
    """Scale 4 -> 10, inject `fault` on the primary once nodes are being placed, then check
    the scale finishes, a later one too, every invariant holds and no log shows the password."""
    grid.up(agents=AGENTS)
    grid.scale(4)
    grid.wait_settled()

    mark = grid.mark()
    grid.scale(10)
    grid.wait_event("spawn_requested", since=mark, count=1)  # the scale is under way
    old = fault()
    new = sentinel_set.wait_failover(old)
    assert new != old

    assert wait_for(quiet(grid.state.desired), 20, what="desired state readable") == {"default": 10}
    grid.wait_settled(timeout=90)
    grid.wait_agents(*AGENTS, timeout=30)
    # the grid acts on new requests after the failover, on the promoted primary (once the
    # other replica follows it: GRID_STATE_MIN_REPLICAS=1 makes `grid scale` wait for one)
    sentinel_set.wait_replicas(new, 1)
    grid.scale(12)
    grid.wait_settled(timeout=60)
    assert_all_alive(grid)
    assert_invariants(grid)
    for name in grid.procs:
        assert PASSWORD not in grid.log(name), f"{name}'s log shows the Redis password"


def test_primary_killed_during_scale(sentinel_set: SentinelSet, chaos: GridFactory) -> None:
    # `grid scale` returns only once a replica holds the new size: it survives the failover
    grid = chaos(url=sentinel_set.url, env={"GRID_STATE_MIN_REPLICAS": "1"})
    _scale_through_failover(grid, sentinel_set, sentinel_set.kill_primary)


def test_primary_hung_during_scale(sentinel_set: SentinelSet, chaos: GridFactory) -> None:
    """SIGSTOP instead of kill: connections to the old primary stay open and silent, so
    only socket timeouts (redis-py's and the broker's transport options) get clients off."""
    grid = chaos(url=sentinel_set.url, env={"GRID_STATE_MIN_REPLICAS": "1"})
    _scale_through_failover(grid, sentinel_set, sentinel_set.freeze_primary)
