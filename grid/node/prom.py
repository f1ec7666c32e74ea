"""Prometheus text exposition format 0.0.4: a small stdlib-only parser and value formatting.

The agent's metrics sampler turns a node's /metrics into numbers with `parse_prometheus`;
grid-node renders its own samples with `format_sample`, so both sides agree on escaping
and on how NaN and infinities are spelled.
"""

from __future__ import annotations

import math
import re

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def is_metric_name(name: str) -> bool:
    """True for a valid Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`)."""
    return NAME_RE.fullmatch(name) is not None


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as the format spells it: integers without `.0`, `NaN`, `+Inf`, `-Inf`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def series_key(name: str, labels: dict[str, str]) -> str:
    """Canonical series id: labels sorted by name, values escaped, no braces when unlabelled."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{escape_label_value(labels[k])}"' for k in sorted(labels))
    return f"{name}{{{inner}}}"


def format_sample(name: str, value: float, labels: dict[str, str] | None = None) -> str:
    """One exposition line (without newline)."""
    return f"{series_key(name, labels or {})} {format_value(value)}"


def parse_value(text: str) -> float:
    """A sample value: a float, `NaN` or `[+-]Inf` in any case (Python's `1_0` is refused)."""
    if "_" in text:
        raise ValueError(f"invalid sample value {text!r}")
    return float(text)


def _skip_blanks(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    return pos


def _parse_label_value(line: str, pos: int) -> tuple[str, int]:
    """Parse a quoted label value starting at the opening quote; return (value, next pos)."""
    if pos >= len(line) or line[pos] != '"':
        raise ValueError("expected '\"' to open a label value")
    out: list[str] = []
    pos += 1
    while pos < len(line):
        ch = line[pos]
        if ch == '"':
            return "".join(out), pos + 1
        if ch == "\\":
            nxt = line[pos + 1 : pos + 2]
            # unknown escapes are kept literally, as Prometheus does
            out.append(_UNESCAPES.get(nxt, "\\" + nxt))
            pos += 2
        else:
            out.append(ch)
            pos += 1
    raise ValueError("unterminated label value")


def _parse_labels(line: str, pos: int) -> tuple[dict[str, str], int]:
    """Parse `{a="x",b="y",}` starting at `{`; return (labels, pos after `}`)."""
    labels: dict[str, str] = {}
    pos += 1
    while True:
        pos = _skip_blanks(line, pos)
        if line[pos : pos + 1] == "}":
            return labels, pos + 1
        match = LABEL_NAME_RE.match(line, pos)
        if match is None:
            raise ValueError(f"invalid label name at column {pos + 1}")
        pos = _skip_blanks(line, match.end())
        if line[pos : pos + 1] != "=":
            raise ValueError(f"expected '=' after label {match.group()!r}")
        value, pos = _parse_label_value(line, _skip_blanks(line, pos + 1))
        if match.group() in labels:
            raise ValueError(f"duplicate label {match.group()!r}")
        labels[match.group()] = value
        pos = _skip_blanks(line, pos)
        if line[pos : pos + 1] == ",":
            pos += 1
        elif line[pos : pos + 1] != "}":
            raise ValueError(f"expected ',' or '}}' at column {pos + 1}")


def parse_line(line: str) -> tuple[str, float]:
    """One sample line → (canonical series key, value). The timestamp, if any, is ignored."""
    match = NAME_RE.match(line)
    if match is None:
        raise ValueError("invalid metric name")
    name, pos = match.group(), match.end()
    labels: dict[str, str] = {}
    if line[pos : pos + 1] == "{":
        labels, pos = _parse_labels(line, pos)
    rest = line[pos:]
    if rest[:1] not in (" ", "\t"):
        raise ValueError("expected whitespace before the value")
    fields = rest.split("#", 1)[0].split()  # drop an OpenMetrics exemplar, if any
    if not 1 <= len(fields) <= 2:
        raise ValueError("expected a value and an optional timestamp")
    if len(fields) == 2:
        int(fields[1])  # timestamps are integer milliseconds
    return series_key(name, labels), parse_value(fields[0])


def parse_prometheus(text: str) -> dict[str, float]:
    """Samples of a text exposition keyed by canonical series (see `series_key`).

    Comments (`# HELP`, `# TYPE`, any `#` line) and blank lines are skipped; a malformed
    line raises ValueError naming its line number. A repeated series keeps its last value.
    """
    samples: dict[str, float] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key, value = parse_line(line)
        except (ValueError, IndexError) as exc:
            raise ValueError(f"line {number}: {exc}: {raw!r}") from None
        samples[key] = value
    return samples


def metric_name(key: str) -> str:
    """The metric name of a canonical series key (its labels dropped)."""
    return key.split("{", 1)[0]


def sum_by_name(samples: dict[str, float]) -> dict[str, float]:
    """Sum the samples of each metric name over all its label sets."""
    totals: dict[str, float] = {}
    for key, value in samples.items():
        name = metric_name(key)
        totals[name] = totals.get(name, 0.0) + value
    return totals
