"""What grid-node needs to write the Prometheus text format 0.0.4: names, escaping, values.

Stdlib only on purpose. The rest of Grid uses prometheus_client (the master's /metrics, the
agent's scrape parser), but grid-node's spawn -> /health 200 is a benchmarked figure (66 ms
in docs/BENCHMARKS.md) paid on every scale-up, and importing prometheus_client first made
it about 17 ms (a quarter) slower: p50 75 -> 92 ms, min 61 -> 78 ms, 60 spawns of each,
interleaved, on the 2-core dev machine (2026-12). So the node writes its few families
itself; tests parse its real /metrics with prometheus_client's parser
(tests/integration/test_node_server.py).
"""

from __future__ import annotations

import math
import re

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


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
