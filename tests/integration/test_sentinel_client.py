"""Grid's redis-py client on a Sentinel URL: it follows a failover, and WAIT confirms writes."""

from __future__ import annotations

import pytest
import redis

from grid.core.connection import confirm_replicated, redis_client
from grid.core.errors import GridError
from tests.helpers import wait_for
from tests.sentinel import SentinelSet


@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_client_follows_the_promoted_replica(sentinel_set: SentinelSet, fault: str) -> None:
    """kill: the old primary refuses connections. freeze (SIGSTOP): it accepts them and never
    answers; redis-py alone would retry on it until every retry timed out (40 s, then an
    error: redis-py issue #3874), Grid's client asks the sentinels on each reconnect."""
    client = redis_client(sentinel_set.url)
    client.set("k", "before")
    confirm_replicated(client, 2)  # both replicas hold it: the promoted one will too

    old = sentinel_set.kill_primary() if fault == "kill" else sentinel_set.freeze_primary()
    new = sentinel_set.wait_failover(old)

    def write_after() -> bool:
        try:
            return bool(client.set("k2", "after"))
        except redis.RedisError:
            return False  # still failing over: the caller's loop retries, as Grid's do

    wait_for(write_after, 15, what="a write on the promoted primary")  # one 10 s socket timeout
    assert client.get("k") == "before"
    with sentinel_set.data_client(new) as direct:
        assert direct.get("k2") == "after"  # it went to the new primary, not elsewhere
    client.close()


def test_confirm_replicated_names_too_few_replicas(sentinel_set: SentinelSet) -> None:
    client = redis_client(sentinel_set.url)
    client.set("k", "v")
    confirm_replicated(client, 2, timeout=5)
    with pytest.raises(GridError, match="confirmed by 2 of 3 replica"):
        confirm_replicated(client, 3, timeout=0.3)
    client.close()
