"""The event log on a real Redis: a bounded stream, filtered reads, live heartbeats."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from grid.core import naming
from grid.core.connection import redis_client
from grid.core.events import LIVE_CHANNEL, EventLog, EventType
from grid.core.rtypes import Redis
from tests.helpers import wait_for


@pytest.fixture
def client(redis_url: str) -> Iterator[Redis]:
    c = redis_client(redis_url)
    yield c
    c.close()


def test_emit_stores_every_field(client: Redis) -> None:
    log = EventLog(client)
    before = time.time()
    log.emit(
        EventType.SPAWN_SUCCEEDED,
        "node n1 running",
        agent_id="a1",
        node_id="n1",
        pool="web",
        endpoint="http://127.0.0.1:1",
        duration_ms=12.5,
    )
    (ev,) = log.read()
    assert ev.type == "spawn_succeeded"
    assert (ev.message, ev.agent_id, ev.node_id, ev.pool) == ("node n1 running", "a1", "n1", "web")
    assert ev.data == {"endpoint": "http://127.0.0.1:1", "duration_ms": 12.5}
    assert before <= ev.ts <= time.time()
    assert ev.id and client.xlen(naming.events_key()) == 1


def test_unknown_type_is_refused_and_nothing_written(client: Redis) -> None:
    with pytest.raises(ValueError):
        EventLog(client).emit("bogus")
    assert client.xlen(naming.events_key()) == 0


def test_heartbeats_are_published_not_stored(client: Redis) -> None:
    sub = client.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(LIVE_CHANNEL)
    wait_for(lambda: client.pubsub_numsub(LIVE_CHANNEL)[0][1] == 1, what="subscription")
    EventLog(client).emit(EventType.AGENT_HEARTBEAT, agent_id="a1", node_count=3)
    message = wait_for(lambda: sub.get_message(timeout=0.1), timeout=5, what="live heartbeat")
    sub.close()
    assert message is not None
    fields = json.loads(message["data"])
    assert fields["type"] == "agent_heartbeat" and fields["agent_id"] == "a1"
    assert json.loads(fields["data"]) == {"node_count": 3}
    assert client.xlen(naming.events_key()) == 0


def test_stream_is_bounded_by_maxlen(client: Redis) -> None:
    maxlen = 50
    log = EventLog(client, maxlen=maxlen)
    pipe = client.pipeline(transaction=False)
    for i in range(2000):
        log.emit(EventType.SCALE_REQUESTED, f"#{i}", pool="p", pipe=pipe, i=i)
    pipe.execute()
    # approximate trimming (XADD MAXLEN ~) keeps at least maxlen and drops whole stream nodes
    node_size = int(client.config_get("stream-node-max-entries")["stream-node-max-entries"])
    length = client.xlen(naming.events_key())
    assert maxlen <= length <= maxlen + node_size
    newest = log.read(limit=1)
    assert newest[0].data == {"i": 1999}  # trimming drops the oldest, never the newest


def test_read_filters(client: Redis) -> None:
    log = EventLog(client)
    log.emit(EventType.SPAWN_REQUESTED, agent_id="a1", node_id="n1", pool="web")
    log.emit(EventType.SPAWN_SUCCEEDED, agent_id="a1", node_id="n1", pool="web")
    log.emit(EventType.SPAWN_SUCCEEDED, agent_id="a2", node_id="n2", pool="db")
    log.emit(EventType.STOP_SUCCEEDED, agent_id="a2", node_id="n1", pool="web")
    log.emit(EventType.CLUSTER_HEALTHY)

    def ids(**filters: object) -> list[tuple[str, str]]:
        return [(e.type, e.node_id) for e in log.read(**filters)]  # type: ignore[arg-type]

    assert len(ids()) == 5
    assert ids(types={"spawn_succeeded"}) == [("spawn_succeeded", "n1"), ("spawn_succeeded", "n2")]
    assert ids(types={"stop_succeeded", "cluster_healthy"}) == [
        ("stop_succeeded", "n1"),
        ("cluster_healthy", ""),
    ]
    assert ids(agent_id="a2") == [("spawn_succeeded", "n2"), ("stop_succeeded", "n1")]
    assert ids(node_id="n1") == [
        ("spawn_requested", "n1"),
        ("spawn_succeeded", "n1"),
        ("stop_succeeded", "n1"),
    ]
    assert ids(pool="db") == [("spawn_succeeded", "n2")]
    assert ids(pool="web", types={"spawn_succeeded"}, agent_id="a1") == [("spawn_succeeded", "n1")]
    assert ids(pool="nope") == []


def test_read_since(client: Redis) -> None:
    log = EventLog(client)
    log.emit(EventType.SCALE_REQUESTED, "old")
    cut = time.time()

    def server_time() -> float:
        seconds, micros = client.time()
        return float(seconds) + float(micros) / 1e6

    # stream ids come from the server clock (same host): wait until it has moved past the cut
    wait_for(lambda: server_time() > cut + 0.003, what="the clock to move")
    log.emit(EventType.SCALE_REQUESTED, "new")
    assert [e.message for e in log.read(since=cut + 0.001)] == ["new"]
    assert [e.message for e in log.read()] == ["old", "new"]
    assert log.read(since=time.time() + 60) == []


def test_read_limit_keeps_the_newest_oldest_first_across_pages(client: Redis) -> None:
    log = EventLog(client)
    pipe = client.pipeline(transaction=False)
    for i in range(5):
        log.emit(EventType.NODE_CRASHED, node_id=f"n{i}", pipe=pipe)
    for i in range(1500):  # more than one page of non-matching events after them
        log.emit(EventType.SCALE_REQUESTED, pipe=pipe, i=i)
    pipe.execute()
    assert [e.node_id for e in log.read(types={"node_crashed"}, limit=3)] == ["n2", "n3", "n4"]
    assert [e.node_id for e in log.read(types={"node_crashed"})] == [f"n{i}" for i in range(5)]
    latest = log.read(limit=2)
    assert [e.data["i"] for e in latest] == [1498, 1499]


def test_follow_yields_new_matching_events(client: Redis) -> None:
    log = EventLog(client)
    log.emit(EventType.SCALE_REQUESTED, "before")
    (first,) = log.read()
    log.emit(EventType.SPAWN_REQUESTED, "skip me", node_id="n1")
    log.emit(EventType.SPAWN_SUCCEEDED, "want me", node_id="n1")
    stream = log.follow(after=first.id, block_ms=50, types={"spawn_succeeded"})
    ev = next(stream)
    assert ev is not None and ev.message == "want me"
    assert next(stream) is None  # idle: nothing new within block_ms
    log.emit(EventType.SPAWN_SUCCEEDED, "later")
    later = wait_for(lambda: next(stream), timeout=5, what="the later event")
    assert later is not None and later.message == "later"
