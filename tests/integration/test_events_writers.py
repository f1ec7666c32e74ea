"""The hot writers on a real Redis: the master and the agents write events through one
buffered writer per process, which flushes within its interval and loses nothing when a
runtime stops cleanly; the leading master's trim pass applies retention to the stream and
to every index (nothing else trims the index of a type nobody writes any more)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from grid.core import naming
from grid.core.connection import Clients, redis_client
from grid.core.events import EventLog, EventType, check_indexes
from grid.core.rtypes import Redis
from grid.core.settings import Settings
from grid.core.tasknames import TaskName
from grid.workers.agent.runtime import AgentOptions, AgentRuntime
from grid.workers.master.runtime import MasterRuntime
from tests.helpers import wait_for


@pytest.fixture
def client(redis_url: str) -> Iterator[Redis]:
    with contextlib.closing(redis_client(redis_url)) as c:
        yield c


@pytest.fixture
def reader(redis_url: str) -> Iterator[EventLog]:
    """An unbuffered log on a client of its own: it sees only what reached Redis."""
    with contextlib.closing(redis_client(redis_url)) as c:
        yield EventLog(c)


def test_a_buffered_event_reaches_redis_within_the_flush_interval(
    client: Redis, reader: EventLog
) -> None:
    log = EventLog(client, buffered=True, batch_size=1000, flush_interval=0.3)
    try:
        started = time.monotonic()
        for i in range(10):
            log.emit(EventType.SCALE_REQUESTED, f"#{i}", pool="web")
        wait_for(lambda: len(reader.read(pool="web")) == 10, timeout=5.0, what="the batch")
        assert time.monotonic() - started < 0.3 + 2.0  # the interval, plus a loaded machine
        # the ten went as one batch: one entry in the type's index
        index = client.xrange(naming.events_index_key("type", "scale_requested"))
        assert len(index) == 1 and "base" in index[0][1]
    finally:
        log.close()


def test_the_runtimes_share_one_buffered_log_per_client(client: Redis, redis_url: str) -> None:
    settings = Settings()
    first = EventLog.shared(client, settings)
    assert EventLog.shared(client, settings) is first
    assert first.writer is not None
    other = redis_client(redis_url)
    try:
        assert EventLog.shared(other, settings) is not first
    finally:
        other.close()


def test_an_agent_that_stops_cleanly_loses_no_buffered_event(
    client: Redis, reader: EventLog
) -> None:
    settings = Settings(events_flush_interval=3600.0, events_batch_size=100_000)
    runtime = AgentRuntime(
        settings, Clients(client, client), AgentOptions(agent_id="agent-flush", platform="sim")
    )
    runtime.start(background=False)
    runtime.shutdown(stop_nodes=True)
    kinds = [e.type for e in reader.read(agent_id="agent-flush")]
    assert kinds == ["agent_registered", "agent_unregistered"]  # written at the stop, not later


def test_a_master_that_stops_cleanly_loses_no_buffered_event(
    client: Redis, reader: EventLog
) -> None:
    settings = Settings(events_flush_interval=3600.0, events_batch_size=100_000)
    runtime = MasterRuntime(settings, Clients(client, client), "master-flush")
    runtime.events.emit(EventType.CLUSTER_HEALTHY, "from the master", pool="flush")
    assert reader.read(pool="flush") == []  # still buffered
    runtime.shutdown()
    assert [e.message for e in reader.read(pool="flush")] == ["from the master"]


def leading(runtime: MasterRuntime) -> MasterRuntime:
    assert runtime.state.acquire_lease(naming.leader_key(), runtime.token, ttl=60)
    runtime.is_leader = True
    return runtime


def test_the_leaders_trim_pass_drops_old_events_and_their_index_entries(
    client: Redis, reader: EventLog
) -> None:
    settings = Settings(events_retention=1.0)
    old = EventLog(client, retention=3600.0)  # written as if long ago: kept by its writer
    for i in range(300):
        old.emit(EventType.NODE_FENCED, f"old {i}", agent_id="agent-old", node_id=f"n-{i}")
    batch = [[*e.to_fields().values()] for e in reader.read(agent_id="agent-old", limit=300)]
    old.store.add_batch(batch)  # and once more as a batch: both kinds of index entry
    index = naming.events_index_key("type", "node_fenced")
    assert client.xlen(index) > 0
    master = MasterRuntime(settings, Clients(client, client), "master-trim")
    try:
        assert master.trim_events() == {"skipped": "not the leader"}
        assert client.xlen(naming.events_key()) == 600
        leading(master)
        newest = reader.read(limit=1)[0].id

        def server_ms() -> int:
            seconds, micros = client.time()
            return int(seconds) * 1000 + int(micros) // 1000

        wait_for(lambda: server_ms() > int(newest.split("-")[0]) + 1500, what="the events to age")
        EventLog(client).emit(EventType.SCALE_REQUESTED, "new", pool="p")  # keeps the stream
        summary = master.trim_events()
        assert summary["trimmed"] is True
        assert [e.message for e in reader.read(limit=1000)] == ["new"]
        assert client.xlen(index) == 0  # nobody writes this type: only the pass trims it
        assert reader.read(agent_id="agent-old") == []
        assert check_indexes(reader.store) == []
    finally:
        master.shutdown()


def test_the_trim_pass_is_on_the_leaders_beat(client: Redis) -> None:
    settings = Settings(events_trim_interval=42.0)
    master = MasterRuntime(settings, Clients(client, client), "master-beat")
    schedule = master.beat_schedule()
    entry = schedule["events-trim"]
    assert entry["task"] == TaskName.EVENTS_TRIM and entry["schedule"] == 42.0
    assert entry["options"]["queue"] == naming.MASTER_QUEUE
