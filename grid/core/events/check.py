"""A consistency check of the indexes against the stream (tests, and for an operator)."""

from __future__ import annotations

from grid.core.events.ids import parse_id
from grid.core.events.model import EVENT_TYPES, FIELDS
from grid.core.events.store import KV, SEP, EventStore, all_index_keys, indexes_of


def check_indexes(store: EventStore) -> list[str]:
    """Every problem found, as text; [] when the indexes and the stream agree:

    - every stream entry is listed, with its value, in each index it belongs to;
    - every index item at or past the stream's oldest entry names an entry that exists and
      belongs to that index; older items are trimmed events, allowed until their index is;
    - index entry k lists, oldest first, only events in (entry k-1, entry k].

    Reads everything: meant for tests and small logs, not for a million events.
    """
    client = store.client
    stream = client.xrange(store.key)
    floor = parse_id(stream[0][0]) if stream else (0, 0)
    expected: dict[str, set[str]] = {}
    for event_id, fields in stream:
        values = [fields.get(name, "") for name in FIELDS]
        for key, value in indexes_of(values):
            expected.setdefault(key, set()).add(event_id + KV + value if value else event_id)
    problems: list[str] = []
    for key in all_index_keys(EVENT_TYPES):
        listed: set[str] = set()
        previous = (0, 0)
        for entry_id, fields in client.xrange(key):
            top = parse_id(entry_id)
            items = fields.get("ids", "").split(SEP)
            sids = [parse_id(item.partition(KV)[0]) for item in items]
            if sids != sorted(sids) or not all(previous < s <= top for s in sids):
                problems.append(f"{key} entry {entry_id}: items out of order or out of range")
            previous = top
            listed.update(item for item, sid in zip(items, sids, strict=True) if sid >= floor)
        want = expected.get(key, set())
        problems += [f"{key}: missing {item!r}" for item in sorted(want - listed)]
        problems += [f"{key}: lists {item!r}, not in the stream" for item in sorted(listed - want)]
    return problems
