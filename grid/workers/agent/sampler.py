"""The agent's metrics sampler: reads each running node's /metrics and stores samples.

Counters become rates between two scrapes of the same node: CPU %, request rate, mean
latency and the latency median (from histogram bucket deltas, as Prometheus'
histogram_quantile does). Gauges pass through; any gauge the node exposes that Grid does
not know is kept under its own name (custom metrics), at most `max_custom` names per pool
(`CustomCap`): every name is a few Redis keys, and anyone who reaches a node can invent
names. The text is read by
prometheus_client's parser, which names a counter's samples `<name>_total` even when a
workload wrote them without the suffix (as OpenMetrics requires).
"""

from __future__ import annotations

import io
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_fd_to_metric_families

from grid.autoscaler.metrics import MetricsStore
from grid.workers.agent.health import fetch_text

log = logging.getLogger(__name__)

REQUESTS = "grid_node_requests_total"
INFLIGHT = "grid_node_inflight_requests"
LATENCY = "grid_node_request_latency_seconds"
CPU = "process_cpu_seconds_total"
RSS = "process_resident_memory_bytes"
GAUGES = {
    "grid_node_keys": "keys",
    "grid_node_bytes": "bytes",
    INFLIGHT: "inflight",
    RSS: "rss_bytes",
}
BUCKET = f"{LATENCY}_bucket"
_KNOWN = {REQUESTS, CPU, f"{LATENCY}_sum", f"{LATENCY}_count", BUCKET, *GAUGES}
#: the names `derive` gives Grid's own metrics; any other name is a custom metric
BUILTIN = frozenset(
    {*GAUGES.values(), "cpu_percent", "request_rate", "latency_avg_ms", "latency_p50_ms"}
)
MAX_CUSTOM_PER_POOL = 100

# A series: the sample name and its labels as sorted (name, value) pairs.
Series = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Scrape:
    ts: float
    totals: dict[str, float]  # summed over labels
    buckets: dict[float, float]  # latency histogram: upper bound -> cumulative count


class _CountedLines(io.StringIO):
    """The text as the parser reads it, line by line, counting the lines read."""

    number = 0

    def __next__(self) -> str:  # type: ignore[override]  # typeshed: _IOBase yields bytes
        self.number += 1
        return super().__next__()


def read_series(text: str) -> dict[Series, float]:
    """Every sample of a text exposition by series, read by prometheus_client's parser.

    A malformed line raises ValueError naming its number (the parser's own message does
    not); a repeated series keeps its last value.
    """
    lines = _CountedLines(text)
    try:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
            for family in text_fd_to_metric_families(lines)
            for sample in family.samples
        }
    except ValueError as exc:
        raise ValueError(f"line {lines.number}: {exc}") from None


def sum_by_name(series: Mapping[Series, float]) -> dict[str, float]:
    """Sum the samples of each name over all its label sets."""
    totals: dict[str, float] = {}
    for (name, _), value in series.items():
        totals[name] = totals.get(name, 0.0) + value
    return totals


def scrape_of(text: str, ts: float) -> Scrape:
    series = read_series(text)
    buckets: dict[float, float] = {}
    for (name, labels), value in series.items():
        if name == BUCKET:
            le = dict(labels).get("le", "")
            try:
                bound = float(le)  # "+Inf" included
            except ValueError:
                raise ValueError(f"{BUCKET} with le={le!r}") from None
            buckets[bound] = buckets.get(bound, 0.0) + value
    return Scrape(ts, sum_by_name(series), buckets)


def quantile_from_buckets(q: float, deltas: Mapping[float, float]) -> float | None:
    """Linear interpolation inside the bucket holding the q-th observation."""
    bounds = sorted(deltas)
    if not bounds or deltas[bounds[-1]] <= 0:
        return None
    rank = q * deltas[bounds[-1]]
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = deltas[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            span = count - lower_count
            frac = (rank - lower_count) / span if span > 0 else 1.0
            return lower_bound + (bound - lower_bound) * frac
        lower_bound, lower_count = bound, count
    return None


def derive(prev: Scrape | None, cur: Scrape) -> dict[str, float]:
    """The metrics Grid stores for one node from two consecutive scrapes."""
    out = {name: cur.totals[src] for src, name in GAUGES.items() if src in cur.totals}
    for name, value in cur.totals.items():
        if name not in _KNOWN and not name.startswith(("process_", "python_")):
            out[name] = value
    if prev is None:
        return out
    dt = cur.ts - prev.ts
    if dt <= 0:
        return out

    def delta(name: str) -> float | None:
        if name not in cur.totals or name not in prev.totals:
            return None
        change = cur.totals[name] - prev.totals[name]
        return change if change >= 0 else None  # counter reset: the node restarted

    if (cpu := delta(CPU)) is not None:
        out["cpu_percent"] = 100.0 * cpu / dt
    if (requests := delta(REQUESTS)) is not None:
        out["request_rate"] = requests / dt
    lat_sum, lat_count = delta(f"{LATENCY}_sum"), delta(f"{LATENCY}_count")
    if lat_sum is not None and lat_count:
        out["latency_avg_ms"] = 1000.0 * lat_sum / lat_count
        deltas = {b: cur.buckets[b] - prev.buckets.get(b, 0.0) for b in cur.buckets}
        p50 = quantile_from_buckets(0.5, deltas)
        if p50 is not None:
            out["latency_p50_ms"] = 1000.0 * p50
    return out


class CustomCap:
    """Admits at most `limit` custom metric names per pool; a name not seen for
    `forget_after` seconds gives its place back. Grid's own metrics always pass."""

    def __init__(self, limit: int, forget_after: float) -> None:
        self.limit = limit
        self.forget_after = forget_after
        self._seen: dict[str, dict[str, float]] = {}  # pool -> admitted name -> last seen

    def admit(self, pool: str, metrics: dict[str, float], now: float) -> dict[str, float]:
        seen = self._seen.setdefault(pool, {})
        for name in [n for n, at in seen.items() if now - at > self.forget_after]:
            del seen[name]
        kept, dropped = {}, []
        for name, value in metrics.items():
            if name in BUILTIN or name in seen or len(seen) < self.limit:
                kept[name] = value
                if name not in BUILTIN:
                    seen[name] = now
            else:
                dropped.append(name)
        if dropped:
            log.warning(
                "pool %s: %d custom metric(s) over the cap of %d dropped (%s ...)",
                pool,
                len(dropped),
                self.limit,
                ", ".join(sorted(dropped)[:3]),
            )
        return kept


class NodeSampler:
    """Scrapes the agent's running nodes every `interval` seconds in a thread."""

    def __init__(
        self,
        store: MetricsStore,
        nodes: Callable[[], list[tuple[str, str, str]]],  # (node_id, pool, endpoint)
        source: str,
        interval: float,
        max_custom: int = MAX_CUSTOM_PER_POOL,
    ) -> None:
        self.store = store
        self.nodes = nodes
        self.source = source
        self.interval = interval
        self._prev: dict[str, Scrape] = {}
        self._custom = CustomCap(max_custom, forget_after=max(60.0, 12 * interval))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample_once(self) -> int:
        batch: list[dict[str, Any]] = []
        seen = set()
        for node_id, pool, endpoint in self.nodes():
            text = fetch_text(endpoint, "/metrics", timeout=2.0)
            if text is None:
                continue
            now = time.time()
            try:
                cur = scrape_of(text, now)
            except ValueError as exc:  # one node's bad text must not cost the others theirs
                log.warning("node %s: unreadable /metrics from %s: %s", node_id, endpoint, exc)
                continue
            metrics = self._custom.admit(pool, derive(self._prev.get(node_id), cur), now)
            self._prev[node_id] = cur
            seen.add(node_id)
            batch.append({"node_id": node_id, "pool": pool, "ts": now, "metrics": metrics})
        for gone in set(self._prev) - seen:
            del self._prev[gone]
        return self.store.write_samples(batch, source=self.source) if batch else 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="node-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample_once()
            except Exception as exc:  # noqa: BLE001 - sampling must never kill the agent
                log.warning("sampling failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
