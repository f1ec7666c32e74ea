"""Durations as users write them: ``30s``, ``5m``, ``1h30m``, ``1d``, ``500ms`` or seconds.

One parser for the CLI (`--since`, `--window`, `--timeout`) and the policy files.
"""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: str | float | int) -> float:
    """Seconds in ``30s``/``5m``/``1h30m``/``1d`` or a bare number of seconds; ValueError if bad."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like 30s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_RE.findall(text)
            if not text or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"bad duration {value!r}: use e.g. 30s, 5m, 1h30m") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"bad duration {value!r}: must be >= 0")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest spelling parse_duration reads back: 90 -> ``1m30s``, 0.5 -> ``500ms``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    out = []
    rest = round(seconds, 3)
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        if rest >= size:
            count = int(rest // size)
            out.append(f"{count}{unit}")
            rest = round(rest - count * size, 3)
    if rest:
        out.append(f"{rest:g}s")
    return "".join(out)


_RATE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?(ms|s|m|min|h|d)")


def parse_rate(value: str | float | int) -> float:
    """Events per second in ``3/s``, ``30/min``, ``2/5m``, ``100/h`` or a bare number per
    second; ValueError if bad."""
    if isinstance(value, bool):
        raise ValueError("must be a rate like 2/s or 30/min")
    if isinstance(value, int | float):
        rate = float(value)
    else:
        text = value.strip().lower()
        try:
            rate = float(text)
        except ValueError:
            match = _RATE_RE.fullmatch(text)
            if match is None:
                raise ValueError(f"bad rate {value!r}: use e.g. 2/s, 30/min, 100/h") from None
            count, span, unit = match.groups()
            seconds = float(span or 1) * _UNITS["m" if unit == "min" else unit]
            if seconds <= 0:
                raise ValueError(f"bad rate {value!r}: the time span must be > 0") from None
            rate = float(count) / seconds
    if not math.isfinite(rate) or rate < 0:
        raise ValueError(f"bad rate {value!r}: must be >= 0")
    return rate
