"""The leader's passes never wait behind each other (issue 9).

A long reconcile pass delays neither the health pass nor the autoscaler, and a reconcile
asked for while one runs returns at once and is not lost: the running pass goes round once
more and acts on what was written before the request. Real Redis, the real MasterRuntime; the
only instrument is a gate that holds the first pass open until the test lets it go.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grid.core import naming
from grid.core.celery_app import configure
from grid.core.connection import Clients, redis_client
from grid.core.settings import Settings
from grid.core.state import AgentRecord
from grid.workers.master.runtime import MasterRuntime

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def master(redis_url: str, tmp_path: Path) -> Iterator[MasterRuntime]:
    """A runtime holding the leader lease, sending its tasks to the test Redis."""
    configure(redis_url)
    client = redis_client(redis_url)
    runtime = MasterRuntime(
        Settings(redis_url=redis_url, home=tmp_path), Clients(client, client), "passes-master"
    )
    assert runtime.state.acquire_lease(naming.leader_key(), runtime.token, ttl=60)
    runtime.is_leader = True
    yield runtime
    runtime.state.release_lease(naming.leader_key(), runtime.token)


class HeldPass:
    """Wraps the runtime's pass so that the first one, having read and acted, stays inside
    until `release` (a pass still busy when new writes and requests come)."""

    def __init__(self, runtime: MasterRuntime) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()
        self.passes = 0
        self._real = runtime._reconcile
        runtime._reconcile = self  # type: ignore[method-assign]

    def __call__(self, reason: str) -> dict[str, Any]:
        self.passes += 1
        result = self._real(reason)
        if self.passes == 1:
            self.inside.set()
            assert self.release.wait(30), "the test never let the first pass go"
        return result


def test_a_long_reconcile_delays_no_other_pass_and_loses_no_request(
    master: MasterRuntime,
) -> None:
    held = HeldPass(master)
    results: list[dict[str, Any]] = []
    first = threading.Thread(target=lambda: results.append(master.reconcile("long pass")))
    first.start()
    try:
        assert held.inside.wait(10), "the first pass never started"

        # While it is held: a scale is written and asked for; the call does not wait.
        master.state.register_agent(AgentRecord(agent_id="a1", last_heartbeat=time.time()))
        master.state.set_desired(naming.DEFAULT_POOL, 2)
        assert master.reconcile("scale") == {"queued": "scale"}
        assert held.passes == 1 and first.is_alive()

        # ... and the other passes run to the end, not skipped, not waiting.
        health = master.health_tick()
        assert "transitions" in health and "cluster" in health, health
        autoscale = master.autoscale_tick()
        assert "evaluated" in autoscale, autoscale
        assert first.is_alive() and master.state.nodes(pool=naming.DEFAULT_POOL) == []
    finally:
        held.release.set()
        first.join(10)
    assert not first.is_alive()

    # The held pass went round once more and placed the pool written during it.
    assert held.passes == 2
    placed = master.state.nodes(pool=naming.DEFAULT_POOL)
    assert len(placed) == 2 and {n.agent_id for n in placed} == {"a1"}
    assert results and results[0].get("spawned") == 2, results
    assert master.state.r.llen(naming.agent_queue("a1")) == 1  # one batch task for the agent


def test_a_request_after_the_pass_ends_gets_a_pass_of_its_own(master: MasterRuntime) -> None:
    master.state.register_agent(AgentRecord(agent_id="a1", last_heartbeat=time.time()))
    assert master.reconcile("idle").get("changed") is False
    master.state.set_desired(naming.DEFAULT_POOL, 1)
    assert master.reconcile("scale").get("spawned") == 1
    assert len(master.state.nodes(pool=naming.DEFAULT_POOL)) == 1
