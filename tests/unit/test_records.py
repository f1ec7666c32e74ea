"""Records as Redis hashes (grid.core.state): text encoding, typed decoding, malformed input."""

from __future__ import annotations

import logging

import pytest

from grid.core.state import (
    AgentRecord,
    AgentStatus,
    NodeRecord,
    NodeStatus,
    decode_record,
    index_entry,
    split_entry,
)


def test_a_node_record_round_trips_through_its_hash_with_types() -> None:
    rec = NodeRecord(
        node_id="default-1", agent_id="a1", status=NodeStatus.RUNNING, pid=42, port=4001
    )
    stored = {str(k): str(v) for k, v in rec.to_hash().items()}
    assert stored["status"] == "running" and stored["memory_mb"] == "" and stored["pid"] == "42"
    back = NodeRecord.from_hash(stored)
    assert back == rec
    assert back.status is NodeStatus.RUNNING and back.memory_mb is None and back.active


def test_an_agent_record_decodes_labels_and_flags() -> None:
    rec = AgentRecord(agent_id="a1", labels={"zone": "a"}, draining=True, cost=0.5)
    back = AgentRecord.from_hash({str(k): str(v) for k, v in rec.to_hash().items()})
    assert (back.labels, back.draining, back.cost, back.status) == (
        {"zone": "a"},
        True,
        0.5,
        AgentStatus.ONLINE,
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"node_id": "bogus", "port": "abc"},
        {"node_id": "bogus", "status": "exploded"},
        {"port": "1"},  # no node_id
    ],
)
def test_a_malformed_hash_is_skipped_with_a_warning(
    fields: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="grid.core.state"):
        assert decode_record(NodeRecord, "grid:node:bogus", fields) is None
    assert "grid:node:bogus" in caplog.text


def test_unknown_fields_are_ignored_and_empty_means_default() -> None:
    rec = decode_record(NodeRecord, "k", {"node_id": "n", "pid": "", "extra": "x"})
    assert rec is not None and rec.pid is None


def test_index_entries_carry_generation_status_and_pool() -> None:
    rec = NodeRecord(node_id="n", agent_id="a", pool="web", generation=7, status="running")
    assert index_entry(rec) == "7:running:web"
    assert split_entry(index_entry(rec)) == ("7", "running", "web")
    assert split_entry("7:running") is None  # not an entry: skipped by readers
