"""The event catalogue and event encoding (grid.core.events), with no Redis.

Reading and writing the stream against a real Redis is in tests/integration/test_events_log.py.
"""

from __future__ import annotations

import pytest

from grid.core.events import EVENT_TYPES, NOT_STORED, Event, EventType, decode_event

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
