"""Stream entry ids ("<ms>-<seq>") as comparable tuples, and the bounds of a query."""

from __future__ import annotations

import re
from dataclasses import dataclass

from grid.core.errors import ConfigError

StreamId = tuple[int, int]
_ID_RE = re.compile(r"(\d{1,19})(?:-(\d{1,19}))?")
_MAX = 2**64 - 1


def parse_id(text: str, what: str = "event id") -> StreamId:
    """(ms, seq) of "1712345678123-4" (or "1712345678123", seq 0); ConfigError names a bad one."""
    m = _ID_RE.fullmatch(text.strip())
    ms, seq = (int(m.group(1)), int(m.group(2) or 0)) if m else (-1, -1)
    if not m or ms > _MAX or seq > _MAX:
        raise ConfigError(f"bad {what} {text!r}: expected an event id such as 1712345678123-0")
    return ms, seq


def format_id(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


@dataclass(frozen=True)
class Bounds:
    """Ids from `low` (inclusive) up to `high` (exclusive); None is open."""

    low: StreamId | None = None
    high: StreamId | None = None

    @classmethod
    def of(
        cls, since: float | None = None, after: str | None = None, before: str | None = None
    ) -> Bounds:
        """`since` (unix seconds) and `after` are lower bounds (the stricter wins); `before`
        is exclusive. Raises ConfigError on a bad cursor or a time before 1970."""
        low: StreamId | None = None
        if since is not None:
            if since < 0:
                raise ConfigError(f"bad since {since!r}: before 1970-01-01")
            low = (int(since * 1000), 0)
        if after is not None:
            ms, seq = parse_id(after, "--after cursor")
            start = (ms, seq + 1) if seq < _MAX else (ms + 1, 0)
            low = max(low, start) if low else start
        high = parse_id(before, "--before cursor") if before is not None else None
        return cls(low, high)

    def holds(self, sid: StreamId) -> bool:
        return (self.low is None or sid >= self.low) and (self.high is None or sid < self.high)

    @property
    def empty(self) -> bool:
        return self.low is not None and self.high is not None and self.low >= self.high

    def redis_min(self) -> str:
        return format_id(self.low) if self.low else "-"

    def redis_max(self) -> str:
        return "(" + format_id(self.high) if self.high else "+"
