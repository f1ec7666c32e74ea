"""The event catalogue and event encoding (grid.core.events), with no Redis.

Reading and writing the stream against a real Redis is in tests/integration/test_events_log.py.
"""

from __future__ import annotations

import pytest

from grid.core import naming
from grid.core.errors import ConfigError
from grid.core.events import EVENT_TYPES, NOT_STORED, Event, EventType, decode_event
from grid.core.events.ids import Bounds, parse_id
from grid.core.events.store import BUCKETS, all_index_keys, index_of

# The 19 types issue 2 lists; the catalogue may hold more (drain, adoption, leader, autoscaler).
ISSUE_TYPES = [
    "agent_registered",
    "agent_unregistered",
    "agent_heartbeat",
    "agent_degraded",
    "agent_offline",
    "agent_recovered",
    "spawn_requested",
    "spawn_succeeded",
    "spawn_failed",
    "stop_requested",
    "stop_succeeded",
    "stop_failed",
    "node_crashed",
    "node_restarted",
    "cluster_healthy",
    "cluster_degraded",
    "cluster_critical",
    "scale_requested",
    "capacity_shortfall",
]


def test_issue_lists_nineteen_types() -> None:
    assert len(ISSUE_TYPES) == len(set(ISSUE_TYPES)) == 19


@pytest.mark.parametrize("name", ISSUE_TYPES)
def test_type_is_in_the_catalogue(name: str) -> None:
    assert name in EVENT_TYPES
    assert EventType(name).value == name


def test_catalogue_has_no_duplicates() -> None:
    assert len(EVENT_TYPES) == len(set(EVENT_TYPES))
    assert tuple(e.value for e in EventType) == EVENT_TYPES


def test_only_heartbeats_are_not_stored() -> None:
    assert frozenset({EventType.AGENT_HEARTBEAT}) == NOT_STORED


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError):
        EventType("node_exploded")


def test_fields_round_trip() -> None:
    ev = Event(
        type="spawn_succeeded",
        ts=1712345678.123456,
        message="node n1 running at http://127.0.0.1:4000",
        agent_id="agent-1",
        node_id="n1",
        pool="default",
        data={"endpoint": "http://127.0.0.1:4000", "duration_ms": 41.5, "nested": {"a": [1, 2]}},
    )
    fields = ev.to_fields()
    assert all(isinstance(v, str) for v in fields.values())
    back = Event.from_fields("1712345678123-0", fields)
    assert back.id == "1712345678123-0"
    assert back.ts == ev.ts  # repr keeps every digit
    assert {**back.as_dict(), "id": ""} == ev.as_dict()


def test_from_fields_tolerates_missing_fields() -> None:
    ev = Event.from_fields("1-0", {"type": "cluster_healthy"})
    assert (ev.type, ev.ts, ev.message, ev.agent_id, ev.data) == (
        "cluster_healthy",
        0.0,
        "",
        "",
        {},
    )


def test_data_that_json_cannot_encode_is_stringified() -> None:
    class Thing:
        def __str__(self) -> str:
            return "thing"

    fields = Event(type="scale_requested", ts=1.0, data={"x": Thing()}).to_fields()
    assert Event.from_fields("1-0", fields).data == {"x": "thing"}


def test_a_malformed_entry_is_skipped_not_raised() -> None:
    assert decode_event("1-0", {"type": "cluster_healthy", "ts": "soon"}) is None
    assert decode_event("1-0", {"type": "cluster_healthy", "data": "{not json"}) is None
    good = decode_event("2-0", {"type": "cluster_healthy", "ts": "2.5"})
    assert good is not None and good.ts == 2.5


def test_every_event_key_shares_one_hash_tag() -> None:
    """The scripts touch the stream and its indexes in one call: one Redis Cluster slot."""
    keys = [naming.events_key(), *all_index_keys(EVENT_TYPES)]
    assert len(keys) == len(set(keys)) == 1 + len(EVENT_TYPES) + 3 * BUCKETS
    for key in keys:
        assert key.startswith("grid:{events}:")


def test_types_have_exact_indexes_and_subjects_hashed_buckets() -> None:
    assert index_of("type", "node_crashed") == ("grid:{events}:ix:type:node_crashed", "")
    key, stored = index_of("agent", "agent-7")
    assert stored == "agent-7"
    assert key == index_of("agent", "agent-7")[0]
    bucket = int(key.rsplit(":", 1)[1])
    assert 0 <= bucket < BUCKETS
    spread = {index_of("node", f"web-{i:08x}")[0] for i in range(2000)}
    assert len(spread) > BUCKETS * 0.9  # 2,000 nodes land in nearly every bucket


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1712345678123-4", (1712345678123, 4)), ("17", (17, 0)), (" 5-0 ", (5, 0))],
)
def test_parse_id(text: str, expected: tuple[int, int]) -> None:
    assert parse_id(text) == expected


@pytest.mark.parametrize("text", ["", "-", "+", "abc", "1-2-3", "1-", "-1", "99999999999999999999"])
def test_parse_id_refuses_what_is_not_an_id(text: str) -> None:
    with pytest.raises(ConfigError, match="bad event id"):
        parse_id(text)


def test_bounds() -> None:
    b = Bounds.of(since=12.5, after="12000-3", before="20000-0")
    assert (b.low, b.high) == ((12500, 0), (20000, 0))  # since is stricter than after here
    assert Bounds.of(after="13000-3").low == (13000, 4)  # after is exclusive
    assert b.holds((12500, 0)) and not b.holds((20000, 0)) and not b.holds((12499, 9))
    assert (b.redis_min(), b.redis_max()) == ("12500-0", "(20000-0")
    assert Bounds.of(after="5-0", before="5-1").empty
    assert (Bounds().redis_min(), Bounds().redis_max()) == ("-", "+")
    with pytest.raises(ConfigError, match="before 1970"):
        Bounds.of(since=-1.0)
