"""The event log's indexes on a real Redis: they agree with the stream whichever way events
are written, queries through them are exact, paging sees every event once, retention and the
cap trim the indexes too, the batched writer loses nothing on a clean shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from grid.core import naming
from grid.core.connection import redis_client
from grid.core.errors import ConfigError
from grid.core.events import Event, EventLog, EventType, check_indexes
from grid.core.events.ids import StreamId, parse_id
from grid.core.events.model import encode
from grid.core.events.store import BUCKETS, EventStore
from grid.core.rtypes import Redis
from tests.helpers import wait_for

WEEK = 7 * 86400.0


@pytest.fixture
def client(redis_url: str) -> Iterator[Redis]:
    c = redis_client(redis_url)
    yield c
    c.close()


def values(i: int, kind: str = "spawn_succeeded", agents: int = 7, nodes: int = 23) -> list[str]:
    return encode(
        kind, time.time(), f"#{i}", f"agent-{i % agents}", f"n-{i % nodes}", f"p{i % 3}", {"i": i}
    )


def stream_ids(client: Redis) -> list[StreamId]:
    return [parse_id(event_id) for event_id, _ in client.xrange(naming.events_key())]


def index_items(client: Redis) -> int:
    keys = client.keys(naming.events_index_key("*", "*"))
    return sum(len(fields["ids"].split("\x1f")) for key in keys for _, fields in client.xrange(key))


def assert_trimmed_to_one_node(client: Redis) -> None:
    """Approximate trimming (MINID ~) drops whole listpack nodes: what each index keeps from
    before the stream's oldest entry fits in one node (the one that also holds newer ones)."""
    floor = stream_ids(client)[0]
    config = client.config_get("stream-node-max-*")
    max_entries, max_bytes = (int(config[f"stream-node-max-{k}"]) for k in ("entries", "bytes"))
    for key in client.keys(naming.events_index_key("*", "*")):
        old = [f["ids"] for i, f in client.xrange(key) if parse_id(i) < floor]
        assert len(old) <= max_entries, key
        assert sum(len(x) for x in old[:-1]) <= max_bytes, key


def test_indexes_agree_with_the_stream_however_events_are_written(client: Redis) -> None:
    log = EventLog(client)
    log.emit(EventType.CLUSTER_HEALTHY, "no subject at all")
    log.emit(EventType.SPAWN_REQUESTED, agent_id="agent-1", node_id="n-1", pool="web")
    pipe = client.pipeline(transaction=False)
    for i in range(50):
        log.emit(EventType.STOP_REQUESTED, agent_id=f"agent-{i % 4}", node_id=f"n-{i}", pipe=pipe)
    pipe.execute()
    log.store.add_batch([values(i) for i in range(700)])
    assert check_indexes(log.store) == []
    assert client.xlen(naming.events_key()) == 752


def test_concurrent_batch_writers_keep_the_indexes_in_order(redis_url: str) -> None:
    def writer(offset: int) -> None:
        c = redis_client(redis_url)
        store = EventStore(c, 10**6, WEEK)
        for start in range(offset, offset + 3000, 100):
            store.add_batch([values(i, "node_crashed" if i % 2 else "spawn_succeeded")
                             for i in range(start, start + 100)])  # fmt: skip
        c.close()

    threads = [threading.Thread(target=writer, args=(o,)) for o in (0, 10_000, 20_000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c = redis_client(redis_url)
    log = EventLog(c)
    assert c.xlen(naming.events_key()) == 9000
    assert check_indexes(log.store) == []
    every = log.read(limit=10_000)
    crashed = log.read(types={"node_crashed"}, node_id="n-5", limit=10_000)
    assert [e.id for e in crashed] == [
        e.id for e in every if e.type == "node_crashed" and e.node_id == "n-5"
    ]
    c.close()


def test_a_rare_type_query_finds_exactly_its_events(client: Redis) -> None:
    log = EventLog(client)
    rare: list[str] = []
    for chunk in range(5):
        log.store.add_batch([values(i) for i in range(chunk * 1000, chunk * 1000 + 1000)])
        log.emit(EventType.NODE_FENCED, f"fenced {chunk}", node_id=f"n-{chunk}")
        rare.append(log.read(limit=1)[0].id)
    found = log.read(types={"node_fenced"}, limit=100)
    assert [e.id for e in found] == rare
    assert [e.message for e in found] == [f"fenced {c}" for c in range(5)]
    assert [e.id for e in log.read(types={"node_fenced"}, limit=2)] == rare[-2:]
    both = log.read(types={"node_fenced", "node_crashed"}, limit=100)
    assert [e.id for e in both] == rare
    assert log.read(types={"node_fenced"}, agent_id="agent-1") == []
    assert [e.id for e in log.read(types={"node_fenced"}, node_id="n-3")] == [rare[3]]


@pytest.mark.parametrize("filters", [{}, {"agent_id": "agent-2"}, {"types": {"node_crashed"}}])
def test_paging_returns_every_event_exactly_once_in_order(
    client: Redis, filters: dict[str, object]
) -> None:
    log = EventLog(client)
    for start in range(0, 1200, 300):  # entries of several batches, pages cut across them
        kinds = ["node_crashed" if i % 5 == 0 else "spawn_succeeded" for i in range(300)]
        log.store.add_batch([values(start + i, kinds[i]) for i in range(300)])
    for i in range(20):
        log.emit(EventType.NODE_CRASHED, agent_id="agent-2", node_id=f"n-{i}")
    want = [e.id for e in log.read(limit=10_000) if _match(e, filters)]
    assert len(want) > 40

    back: list[str] = []
    before: str | None = None
    while page := log.read(limit=37, before=before, **filters):  # type: ignore[arg-type]
        assert len(page) <= 37
        back = [e.id for e in page] + back
        before = page[0].id
    assert back == want

    forward: list[str] = []
    after = "0-0"
    while page := log.read(limit=37, after=after, **filters):  # type: ignore[arg-type]
        forward += [e.id for e in page]
        after = page[-1].id
    assert forward == want

    middle = want[len(want) // 3]
    window = log.read(limit=10_000, after=middle, before=want[-1], **filters)  # type: ignore[arg-type]
    assert [e.id for e in window] == want[len(want) // 3 + 1 : -1]


def _match(ev: Event, filters: dict[str, object]) -> bool:
    types = filters.get("types")
    if isinstance(types, set) and ev.type not in types:
        return False
    return "agent_id" not in filters or ev.agent_id == filters["agent_id"]


def test_retention_by_time_trims_the_stream_and_its_indexes(client: Redis) -> None:
    log = EventLog(client, retention=1.0)
    for start in range(0, 3000, 500):
        log.store.add_batch([values(i) for i in range(start, start + 500)])
    old_newest = stream_ids(client)[-1]
    assert index_items(client) == 3000 * 4
    old_ms = old_newest[0]

    def server_ms() -> int:
        seconds, micros = client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    wait_for(lambda: server_ms() > old_ms + 1100, what="the old events to age past 1 s")
    log.store.add_batch([values(i) for i in range(3000, 3010)])
    log.trim()
    ids = stream_ids(client)
    node_size = int(client.config_get("stream-node-max-entries")["stream-node-max-entries"])
    assert sum(1 for i in ids if i <= old_newest) <= node_size  # approximate: whole nodes go
    assert len([i for i in ids if i > old_newest]) == 10
    assert_trimmed_to_one_node(client)
    type_key = naming.events_index_key("type", "spawn_succeeded")
    kept = [len(f["ids"].split("\x1f")) for _, f in client.xrange(type_key)]
    assert kept in ([10], [500, 10])  # the last old batch only while the stream keeps some
    assert index_items(client) < 3000 * 4 / 2
    assert check_indexes(log.store) == []
    assert len(log.read(limit=100, since=time.time() - 60)) <= 10 + node_size


def test_the_length_cap_trims_the_indexes_too(client: Redis) -> None:
    log = EventLog(client, maxlen=500)
    for start in range(0, 5000, 250):
        log.store.add_batch([values(i) for i in range(start, start + 250)])
    log.trim()
    length = client.xlen(naming.events_key())
    assert 500 <= length <= 500 + 250 + 100
    assert_trimmed_to_one_node(client)
    assert index_items(client) < 5000 * 4 / 2
    assert check_indexes(log.store) == []
    newest = log.read(agent_id="agent-1", limit=1)
    assert newest[0].data["i"] == max(i for i in range(5000) if i % 7 == 1)


def test_the_number_of_index_keys_is_bounded(client: Redis) -> None:
    log = EventLog(client)
    log.store.add_batch([values(i, agents=10_000, nodes=20_000) for i in range(20_000)])
    keys = client.keys(naming.events_index_key("*", "*"))
    assert len(keys) <= 1 + 3 * BUCKETS
    hit = log.read(node_id="n-12345", limit=10)
    assert [e.data["i"] for e in hit] == [12345]


def test_the_batched_writer_loses_nothing_on_a_clean_shutdown(client: Redis) -> None:
    log = EventLog(client, buffered=True, batch_size=64, flush_interval=0.01, capacity=500)
    threads, per = 4, 2500

    def emitter(t: int) -> None:
        for i in range(per):
            log.emit(EventType.SPAWN_SUCCEEDED, agent_id=f"agent-{t}", node_id=f"n-{i % 9}", i=i)

    workers = [threading.Thread(target=emitter, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    log.close()
    assert log.writer is not None and log.writer.dropped == 0
    assert client.xlen(naming.events_key()) == threads * per
    assert check_indexes(log.store) == []
    for t in range(threads):
        got = log.read(agent_id=f"agent-{t}", limit=per + 1)
        assert [e.data["i"] for e in got] == list(range(per))  # each thread's order kept


def test_an_event_emitted_after_close_is_written_at_once(client: Redis) -> None:
    log = EventLog(client, buffered=True)
    log.emit(EventType.SCALE_REQUESTED, "before close")
    log.close()
    log.emit(EventType.SCALE_REQUESTED, "after close")
    assert [e.message for e in log.read()] == ["before close", "after close"]


def test_a_subject_with_separator_characters_is_refused(client: Redis) -> None:
    with pytest.raises(ValueError, match="control characters"):
        EventLog(client).emit(EventType.SPAWN_REQUESTED, node_id="n\x1f1")
    assert client.xlen(naming.events_key()) == 0


def test_flush_makes_buffered_events_visible(client: Redis) -> None:
    log = EventLog(client, buffered=True, batch_size=1000, flush_interval=60)
    log.emit(EventType.SCALE_REQUESTED, "buffered", pool="web")
    assert log.flush(timeout=10)
    assert [e.message for e in log.read(pool="web")] == ["buffered"]
    log.close()


def test_malformed_entries_are_skipped_by_every_read(client: Redis) -> None:
    log = EventLog(client)
    log.emit(EventType.NODE_CRASHED, "good 1", node_id="n-1")
    bad = client.xadd(naming.events_key(), {"type": "node_crashed", "ts": "soon", "node_id": "n-1"})
    key = naming.events_index_key("type", "node_crashed")
    client.xadd(key, {"ids": bad}, id=bad)
    log.emit(EventType.NODE_CRASHED, "good 2", node_id="n-1")
    assert [e.message for e in log.read()] == ["good 1", "good 2"]
    assert [e.message for e in log.read(types={"node_crashed"})] == ["good 1", "good 2"]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"before": "yesterday"}, "--before cursor 'yesterday'"),
        ({"after": "12-x"}, "--after cursor '12-x'"),
        ({"since": -5.0}, "before 1970"),
    ],
)
def test_bad_bounds_are_config_errors(
    client: Redis, kwargs: dict[str, object], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        EventLog(client).read(**kwargs)  # type: ignore[arg-type]
