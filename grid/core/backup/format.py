"""The backup file format, version 1: what a line holds and how values are written.

A backup is one gzip file of JSON lines. The first line is the `Header`; every other line
is a piece of one key:

    {"key": K, "role": "state"|"events", "type": T, "items": [...], "end": {...}}

A key spans one or more consecutive lines of at most `CHUNK` items; its last line carries
`end` (`ttl_ms`, and for a stream its `last_id` and consumer `groups`). Items by type:
string `[value]`; list `[v, ...]`; set `[m, ...]`; zset `[[m, score], ...]` (the score as
Redis prints it, so it reads back exactly); hash `[[field, value], ...]`; stream
`[[id, [field, value, ...]], ...]`. Every key, member and value is a JSON string when it is
UTF-8, else `{"b64": ...}`. The header's `sha256` is over every byte after the header line.

The format is logical (not DUMP payloads, which only a Redis of the same RDB version reads).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, ValidationError

from grid.core.errors import ConfigError

FORMAT = "grid-backup"
VERSION = 1
CHUNK = 1000  # items per line: a line stays small whatever the size of its key
ROLES = ("state", "events")
TYPES = ("string", "list", "set", "zset", "hash", "stream")

Trigger = Literal["manual", "scheduled"]


class BadBackupError(ConfigError):
    """A backup file that cannot be restored: missing, truncated, corrupt, another version."""


class Header(BaseModel):
    """The first line of a backup."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: Literal["grid-backup"]
    version: int
    grid_version: str
    created: float
    trigger: Trigger = "manual"
    source: dict[str, str]  # role -> URL of the Redis it came from (password masked)
    keys: dict[str, int]  # role -> keys
    types: dict[str, int]  # Redis type -> keys
    lines: int  # lines after the header
    sha256: str  # of every byte after the header line

    @property
    def total_keys(self) -> int:
        return sum(self.keys.values())


Key = str | bytes  # text stays text (redis-py sends it as UTF-8); the rest is bytes
_TEXT = {str}


def enc(value: Key) -> str | dict[str, str]:
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode()}


def dec(value: object) -> Key:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error:
            pass
    raise ValueError(f"bad value {str(value)[:40]!r}")


@dataclass
class Piece:
    """One line: some items of one key; `end` on the key's last line. Items are encoded
    (`enc`) when written, and decoded to bytes by `parse_piece`."""

    key: Key
    role: str
    type: str
    items: list[Any] = field(default_factory=list)
    end: dict[str, Any] | None = None

    def to_line(self) -> bytes:
        line: dict[str, Any] = {
            "key": enc(self.key),
            "role": self.role,
            "type": self.type,
            "items": self.items,
        }
        if self.end is not None:
            line["end"] = self.end
        return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def parse_piece(line: bytes) -> Piece:
    """The piece a line holds, its items decoded to bytes; ValueError names what is wrong."""
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("a line is not an object")
    role, type_, items, end = obj.get("role"), obj.get("type"), obj.get("items"), obj.get("end")
    if role not in ROLES or type_ not in TYPES or not isinstance(items, list):
        raise ValueError("a line lacks a known role, type or items")
    items = _items(type_, items)
    if type_ == "string" and len(items) != 1:
        raise ValueError("a string has one value")
    return Piece(dec(obj.get("key")), role, type_, items, None if end is None else _end(end))


_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


def _end(end: Any) -> dict[str, Any]:
    """The end of a key, checked: `ttl_ms`, and a stream's `last_id` and `groups` (their
    names decoded to bytes)."""
    if not isinstance(end, dict):
        raise ValueError("bad end of key")
    ttl = end.get("ttl_ms")
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
        raise ValueError(f"bad TTL {ttl!r}")
    checked: dict[str, Any] = {"ttl_ms": ttl}
    if "last_id" in end or "groups" in end:
        last_id, groups = end.get("last_id", "0-0"), end.get("groups", [])
        if not isinstance(last_id, str) or not _STREAM_ID.fullmatch(last_id):
            raise ValueError(f"bad stream id {str(last_id)[:40]!r}")
        if not isinstance(groups, list):
            raise ValueError("bad stream groups")
        checked["last_id"] = last_id
        checked["groups"] = []
        for group in groups:
            name, delivered = _pair(group)
            if not isinstance(delivered, str) or not _STREAM_ID.fullmatch(delivered):
                raise ValueError(f"bad group position {str(delivered)[:40]!r}")
            checked["groups"].append((dec(name), delivered))
    return checked


def _values(values: list[Any]) -> list[Any]:
    """Decoded values: a list of text as it is (the common case, checked at C speed)."""
    if set(map(type, values)) <= _TEXT:
        return values
    return [dec(v) for v in values]


def _items(type_: str, items: list[Any]) -> list[Any]:
    if type_ in ("string", "list", "set"):
        return _values(items)
    return [_item(type_, i) for i in items]


def _item(type_: str, item: Any) -> Any:
    if type_ == "zset":
        member, score = _pair(item)
        float(score)  # ValueError unless a number Redis printed ("inf" included)
        return dec(member), cast(str, score)
    if type_ == "hash":
        name, value = _pair(item)
        return dec(name), dec(value)
    entry_id, fields = _pair(item)
    bad_id = not isinstance(entry_id, str) or not _STREAM_ID.fullmatch(entry_id)
    if bad_id or not isinstance(fields, list) or not fields or len(fields) % 2:
        raise ValueError("bad stream entry")
    return entry_id, _values(fields)


def _pair(item: Any) -> tuple[Any, Any]:
    if not isinstance(item, list) or len(item) != 2:
        raise ValueError("expected a pair")
    return item[0], item[1]


def parse_header(line: bytes) -> Header:
    try:
        obj = json.loads(line)
    except ValueError:
        obj = None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise BadBackupError("not a Grid backup (its first line is not a grid-backup header)")
    if obj.get("version") != VERSION:
        raise BadBackupError(
            f"backup format version {obj.get('version')!r} is not supported "
            f"(this Grid reads version {VERSION})"
        )
    try:
        return Header.model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BadBackupError(f"bad backup header: {where}: {err['msg'].lower()}") from None
