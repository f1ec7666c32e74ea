"""The backup format's pieces of logic that need no Redis: value encoding, line checks,
file names, and when a scheduled backup is due."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grid.core.backup.files import backup_name, is_scheduled, name_time, newest_time
from grid.core.backup.format import Piece, dec, enc, parse_piece
from grid.core.events import EventLog
from grid.core.settings import load_settings
from grid.workers.master.backups import ScheduledBackups, tick_interval


@pytest.mark.parametrize("value", [b"", b"text", "é".encode(), b"\xff\x00\xfe", b"{}"])
def test_values_round_trip(value: bytes) -> None:
    back = dec(json.loads(json.dumps(enc(value))))
    assert (back.encode() if isinstance(back, str) else back) == value  # text stays text


def test_a_piece_round_trips() -> None:
    piece = Piece(
        b"grid:s",
        "events",
        "stream",
        [["1-1", [enc(b"f"), enc(b"\xff")]]],  # written encoded, read back as bytes
        {"ttl_ms": 5, "last_id": "9-0", "groups": [[enc(b"g"), "1-1"]]},
    )
    back = parse_piece(piece.to_line())
    assert (back.key, back.role, back.type, back.items) == (
        "grid:s",
        "events",
        "stream",
        [("1-1", ["f", b"\xff"])],
    )
    assert back.end == {"ttl_ms": 5, "last_id": "9-0", "groups": [("g", "1-1")]}


BAD_LINES = {
    "not an object": "[]",
    "unknown role": '{"key":"k","role":"broker","type":"set","items":[]}',
    "unknown type": '{"key":"k","role":"state","type":"module","items":[]}',
    "bad b64": '{"key":{"b64":"!!"},"role":"state","type":"set","items":[]}',
    "bad score": '{"key":"k","role":"state","type":"zset","items":[["m","x"]]}',
    "bad stream id": '{"key":"k","role":"state","type":"stream","items":[["1",["a","b"]]]}',
    "odd fields": '{"key":"k","role":"state","type":"stream","items":[["1-1",["a"]]]}',
    "bad ttl": '{"key":"k","role":"state","type":"set","items":[],"end":{"ttl_ms":-5}}',
    "two strings": '{"key":"k","role":"state","type":"string","items":["a","b"]}',
    "nested value": '{"key":"k","role":"state","type":"list","items":[["a"]]}',
    "bool ttl": '{"key":"k","role":"state","type":"set","items":[],"end":{"ttl_ms":true}}',
    "bad group": '{"key":"k","role":"state","type":"stream","items":[],'
    '"end":{"last_id":"1-1","groups":[["g","x"]]}}',
}


@pytest.mark.parametrize("line", sorted(BAD_LINES))
def test_bad_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError):
        parse_piece(BAD_LINES[line].encode())


def test_names_hold_the_time_and_the_trigger() -> None:
    name = backup_name(1_796_000_000.123, "scheduled")
    assert name_time(name) == pytest.approx(1_796_000_000.123, abs=0.001)
    assert is_scheduled(name) and not is_scheduled(backup_name(1.0, "manual"))
    assert name_time("grid-backup-x.jsonl.gz") is None
    assert name_time(".grid-backup-20261202T000000.000Z.jsonl.gz.tmp") is None


def test_a_scheduled_backup_is_due_one_interval_after_the_last(tmp_path: Path) -> None:
    settings = load_settings(backup_interval=600, backup_dir=tmp_path)
    assert tick_interval(settings) == 60  # a due backup waits a minute at most
    backups = ScheduledBackups(settings, EventLog(None))  # type: ignore[arg-type]  # never emits
    start = backups.leading_since
    assert not backups.due(start + 599)  # no backup yet: one interval after the election
    assert backups.due(start + 600)
    (tmp_path / backup_name(start + 500, "scheduled")).touch()
    (tmp_path / backup_name(start + 2000, "manual")).touch()  # made by hand: not counted
    assert newest_time(tmp_path) == pytest.approx(start + 500, abs=0.001)
    assert not backups.due(start + 1099)
    assert backups.due(start + 1100)
