"""The metrics store: node samples and per-pool aggregates in Redis.

Layout (keys from grid.core.naming), chosen so an evaluation reads O(window), not O(nodes x window):

* ``node_samples_key(node)`` - sorted set, score = time, member = JSON of one sample of every
  metric of the node; trimmed to `retention` at each write, expires when the node stops.
* ``pool_metrics_key(pool, metric)`` - sorted set of *partials*: at each write a source (an
  agent) adds one member per pool and metric summarising its nodes at that tick (count, sum,
  min, max and a mergeable log-bucket sketch for percentiles). Several agents serve a pool, so
  the pool's window aggregate merges the partials of every source.
* ``pool_minute_key(pool, metric, minute)`` - per-minute history for forecasts (default
  retention 1 day): each write increments ``<source>|s`` (its total) and ``<source>|n`` (its
  ticks), so the minute's pool total is the sum over sources of their mean total. Readers
  *seal* complete minutes into the sorted set ``pool_history_key(pool, metric)`` (member
  ``<minute>:<total>``, plus a ``sealed`` member scored with the last sealed minute), so a
  forecast reads one range plus the last minute or two: O(history) once, then O(1) hashes
  per evaluation, and never O(nodes).
* ``pool_metric_names_key(pool)`` (sorted set, score = last write, trimmed and expiring with
  `retention`) and ``metric_pools_key()`` (set, expiring with the history) - what exists, for
  `grid metrics`.

Window aggregates over (now - window, now]: ``avg``/``min``/``max``/``p95`` over every node
sample; ``sum`` is the pool total (per source the mean of its per-tick totals, summed over
sources); ``nodes`` the mean number of reporting nodes. ``p95`` comes from the sketch, exact
to 1 % relative.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.client

from grid.core.naming import (
    metric_pools_key,
    node_samples_key,
    pool_history_key,
    pool_metric_names_key,
    pool_metrics_key,
    pool_minute_key,
)
from grid.core.rtypes import Redis

DEFAULT_RETENTION = 3600.0
DEFAULT_HISTORY_RETENTION = 86400.0
HISTORY_STEP = 60.0
_WATERMARK = "sealed"  # member of the sealed history whose score is the last sealed minute
QUANTILE = 0.95

# ---- a mergeable quantile sketch (DDSketch-like, 1 % relative accuracy) -----------------------

_ALPHA = 0.01
_GAMMA = (1 + _ALPHA) / (1 - _ALPHA)
_LN_GAMMA = math.log(_GAMMA)
_TINY = 1e-9


@dataclass
class Sketch:
    """Counts of values per logarithmic bucket; merging two sketches adds their counts."""

    pos: dict[int, int] = field(default_factory=dict)
    neg: dict[int, int] = field(default_factory=dict)
    zero: int = 0

    def add(self, value: float, count: int = 1) -> None:
        if abs(value) < _TINY:
            self.zero += count
            return
        side = self.pos if value > 0 else self.neg
        key = math.ceil(math.log(abs(value)) / _LN_GAMMA)
        side[key] = side.get(key, 0) + count

    def merge(self, other: Sketch) -> None:
        for key, count in other.pos.items():
            self.pos[key] = self.pos.get(key, 0) + count
        for key, count in other.neg.items():
            self.neg[key] = self.neg.get(key, 0) + count
        self.zero += other.zero

    @property
    def count(self) -> int:
        return sum(self.pos.values()) + sum(self.neg.values()) + self.zero

    def quantile(self, q: float) -> float | None:
        """The value at 0-based rank floor(q x (n - 1)), like :func:`exact_quantile`."""
        total = self.count
        if not total:
            return None
        rank = math.floor(q * (total - 1))
        seen = 0
        for key in sorted(self.neg, reverse=True):
            seen += self.neg[key]
            if seen > rank:
                return -_bucket_value(key)
        seen += self.zero
        if seen > rank:
            return 0.0
        for key in sorted(self.pos):
            seen += self.pos[key]
            if seen > rank:
                return _bucket_value(key)
        return _bucket_value(max(self.pos)) if self.pos else 0.0

    def encode(self) -> str:
        def side(counts: dict[int, int]) -> str:
            return ",".join(f"{k}:{c}" for k, c in counts.items())

        return f"{side(self.pos)};{side(self.neg)};{self.zero}"

    @classmethod
    def decode(cls, text: str) -> Sketch:
        pos, neg, zero = text.split(";")

        def side(part: str) -> dict[int, int]:
            out: dict[int, int] = {}
            for item in part.split(",") if part else ():
                key, count = item.split(":")
                out[int(key)] = int(count)
            return out

        return cls(side(pos), side(neg), int(zero))


def merge_encoded(texts: Iterable[str]) -> Sketch:
    """Merge encoded sketches in one pass (string keys until the end: the hot path of p95)."""
    pos: dict[str, int] = defaultdict(int)
    neg: dict[str, int] = defaultdict(int)
    zero = 0
    for text in texts:
        pos_text, neg_text, zero_text = text.split(";")
        for side, part in ((pos, pos_text), (neg, neg_text)):
            if part:
                for item in part.split(","):
                    key, _, count = item.partition(":")
                    side[key] += int(count)
        zero += int(zero_text)
    return Sketch({int(k): c for k, c in pos.items()}, {int(k): c for k, c in neg.items()}, zero)


def _bucket_value(key: int) -> float:
    return 2 * _GAMMA**key / (_GAMMA + 1)


def exact_quantile(values: Sequence[float], q: float = QUANTILE) -> float | None:
    """The value at 0-based rank floor(q x (n - 1)) of the sorted values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


# ---- partials and window statistics ------------------------------------------------------


@dataclass(frozen=True)
class Partial:
    """One source's summary of one metric over its nodes at one tick."""

    ts: float
    source: str
    count: int
    total: float
    lo: float
    hi: float
    sketch: str  # Sketch.encode(), decoded only when a percentile is asked for

    def encode(self) -> str:
        return "|".join(
            (f"{self.ts:.3f}", self.source, str(self.count), repr(self.total),
             repr(self.lo), repr(self.hi), self.sketch)
        )  # fmt: skip

    @classmethod
    def decode(cls, text: str) -> Partial:
        ts, source, count, total, lo, hi, sketch = text.split("|")
        return cls(float(ts), source, int(count), float(total), float(lo), float(hi), sketch)


def summarize(ts: float, source: str, values: Sequence[float]) -> Partial:
    """The partial of `values` (one per node) sampled by `source` at `ts`."""
    sketch = Sketch()
    for value in values:
        sketch.add(value)
    return Partial(
        ts, _clean(source), len(values), float(sum(values)), min(values), max(values),
        sketch.encode(),
    )  # fmt: skip


def uniform_partial(ts: float, source: str, count: int, value: float) -> Partial:
    """The partial of `count` nodes that all read `value` (the backtest's load model)."""
    sketch = Sketch()
    sketch.add(value, count)
    return Partial(ts, _clean(source), count, value * count, value, value, sketch.encode())


def _clean(source: str) -> str:
    return source.replace("|", "_")


@dataclass(frozen=True)
class WindowStats:
    """Aggregates of one pool metric over a window (see the module docstring)."""

    avg: float
    max: float
    min: float
    sum: float
    nodes: float
    samples: int
    p95: float | None = None

    def get(self, aggregation: str) -> float | None:
        value: float | None = getattr(self, aggregation)
        return value

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "avg": self.avg, "max": self.max, "min": self.min, "sum": self.sum,
            "p95": self.p95, "nodes": self.nodes, "samples": self.samples,
        }  # fmt: skip


def combine(partials: Iterable[Partial], with_p95: bool = False) -> WindowStats | None:
    """Merge the partials of a window from any number of sources."""
    samples = 0
    grand_total = 0.0
    low, high = math.inf, -math.inf
    per_source: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    sketches: list[str] = []
    for part in partials:
        if part.count <= 0:
            continue
        samples += part.count
        grand_total += part.total
        low, high = min(low, part.lo), max(high, part.hi)
        acc = per_source[part.source]
        acc[0] += part.total
        acc[1] += part.count
        acc[2] += 1
        if with_p95:
            sketches.append(part.sketch)
    if not samples:
        return None
    pool_sum = sum(total / ticks for total, _, ticks in per_source.values())
    nodes = sum(count / ticks for _, count, ticks in per_source.values())
    p95 = merge_encoded(sketches).quantile(QUANTILE) if with_p95 else None
    return WindowStats(grand_total / samples, high, low, pool_sum, nodes, samples, p95)


def history_bucket(ts: float, step: float = HISTORY_STEP) -> int:
    return int(ts // step * step)


def history_fields(source: str) -> tuple[str, str]:
    """The fields (total, ticks) a source increments in a minute's history hash."""
    return f"{source}|s", f"{source}|n"


def minute_total(fields: Mapping[str, float]) -> float:
    """A minute's pool total from its hash: the sum over sources of their mean total."""
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for name, value in fields.items():
        source, kind = name.rsplit("|", 1)
        acc[source][0 if kind == "s" else 1] += float(value)
    return sum(total / ticks for total, ticks in acc.values() if ticks > 0)


# ---- the Redis store ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    node_id: str
    pool: str
    ts: float
    metrics: dict[str, float]

    @classmethod
    def of(cls, data: Sample | Mapping[str, Any]) -> Sample:
        if isinstance(data, Sample):
            return data
        metrics = {str(k): float(v) for k, v in dict(data["metrics"]).items() if _finite(v)}
        return cls(str(data["node_id"]), str(data["pool"]), float(data["ts"]), metrics)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class MetricsStore:
    """Reads and writes metrics in Redis; implements the engine's MetricsSource."""

    def __init__(
        self,
        client: Redis,
        retention: float = DEFAULT_RETENTION,
        history_retention: float = DEFAULT_HISTORY_RETENTION,
    ) -> None:
        self.client = client
        self.retention = retention
        self.history_retention = history_retention

    # -- writes --

    def write_samples(
        self, samples: Iterable[Sample | Mapping[str, Any]], source: str = "local"
    ) -> int:
        """Write one batch (typically one agent's nodes at one tick) in one pipeline."""
        batch = [Sample.of(s) for s in samples]
        if not batch:
            return 0
        pipe = self.client.pipeline(transaction=False)
        keep_ms = int(self.retention * 1000)
        by_pool: dict[str, list[Sample]] = defaultdict(list)
        for sample in batch:
            key = node_samples_key(sample.node_id)
            member = json.dumps(
                {"ts": sample.ts, "pool": sample.pool, "metrics": sample.metrics},
                separators=(",", ":"),
            )
            pipe.zadd(key, {member: sample.ts})
            pipe.zremrangebyscore(key, "-inf", f"({sample.ts - self.retention}")
            pipe.pexpire(key, keep_ms)
            by_pool[sample.pool].append(sample)
        for pool, group in by_pool.items():
            self._write_pool(pipe, pool, group, source)
        pipe.execute()
        return len(batch)

    def _write_pool(
        self, pipe: redis.client.Pipeline[str], pool: str, group: list[Sample], source: str
    ) -> None:
        ts = max(s.ts for s in group)
        values: dict[str, list[float]] = defaultdict(list)
        for sample in group:
            for name, value in sample.metrics.items():
                values[name].append(value)
        minute = history_bucket(ts)
        keep_history = int(self.history_retention * 1000)
        total_field, ticks_field = history_fields(_clean(source))
        for name, vals in values.items():
            part = summarize(ts, source, vals)
            key = pool_metrics_key(pool, name)
            pipe.zadd(key, {part.encode(): ts})
            pipe.zremrangebyscore(key, "-inf", f"({ts - self.retention}")
            pipe.pexpire(key, int(self.retention * 1000))
            hist = pool_minute_key(pool, name, minute)
            pipe.hincrbyfloat(hist, total_field, part.total)
            pipe.hincrby(hist, ticks_field, 1)
            pipe.pexpire(hist, keep_history)
        if values:  # names scored by their last write: a name unwritten for `retention` goes
            names = pool_metric_names_key(pool)
            pipe.zadd(names, dict.fromkeys(values, ts))
            pipe.zremrangebyscore(names, "-inf", f"({ts - self.retention}")
            pipe.pexpire(names, int(self.retention * 1000))
            pipe.sadd(metric_pools_key(), pool)
            pipe.pexpire(metric_pools_key(), keep_history)

    # -- reads (MetricsSource) --

    def window(
        self, pool: str, metric: str, window: float, now: float, with_p95: bool = False
    ) -> WindowStats | None:
        raw = self.client.zrangebyscore(pool_metrics_key(pool, metric), f"({now - window}", now)
        return combine((Partial.decode(as_text(m)) for m in raw), with_p95)

    def aggregate(
        self, pool: str, metric: str, aggregation: str, window: float, now: float
    ) -> float | None:
        stats = self.window(pool, metric, window, now, with_p95=aggregation == "p95")
        return None if stats is None else stats.get(aggregation)

    def series(self, pool: str, metric: str, start: float, end: float) -> list[tuple[float, float]]:
        """Per-minute pool totals of `metric` between `start` and `end` (oldest first).

        Minutes after the sealed watermark are read from their hashes; those complete by
        `end` (a minute of grace for late writers) are sealed for the next reader.
        """
        sealed_key = pool_history_key(pool, metric)
        lo = history_bucket(max(start, end - self.history_retention))
        pipe = self.client.pipeline(transaction=False)
        pipe.zscore(sealed_key, _WATERMARK)
        pipe.zrangebyscore(sealed_key, lo, end)
        watermark, raw = pipe.execute()
        totals: dict[int, float] = {}
        for member in raw:
            sealed_at, _, total = as_text(member).partition(":")
            if total:
                totals[int(sealed_at)] = float(total)
        first = max(lo, int(watermark) + int(HISTORY_STEP)) if watermark is not None else lo
        missing = list(range(first, int(end) + 1, int(HISTORY_STEP)))
        pipe = self.client.pipeline(transaction=False)
        for bucket in missing:
            pipe.hgetall(pool_minute_key(pool, metric, bucket))
        seal: dict[str | bytes, float] = {}
        sealed_to = None
        for bucket, fields in zip(missing, pipe.execute() if missing else [], strict=True):
            complete = bucket + 2 * HISTORY_STEP <= end  # a minute of grace for late writes
            if fields:
                totals[bucket] = minute_total({as_text(k): float(v) for k, v in fields.items()})
                if complete:
                    seal[f"{bucket}:{totals[bucket]!r}"] = bucket
            if complete:
                sealed_to = bucket
        if sealed_to is not None:
            pipe = self.client.pipeline(transaction=False)
            if seal:
                pipe.zadd(sealed_key, seal)
            pipe.zadd(sealed_key, {_WATERMARK: sealed_to}, gt=True)
            pipe.zremrangebyscore(sealed_key, "-inf", f"({end - self.history_retention}")
            pipe.pexpire(sealed_key, int(self.history_retention * 1000))
            pipe.execute()
        return [(float(b), totals[b]) for b in sorted(totals) if b > start - HISTORY_STEP]

    # -- reads for `grid metrics` --

    def pools(self) -> list[str]:
        return sorted(as_text(p) for p in self.client.smembers(metric_pools_key()))

    def metric_names(self, pool: str) -> list[str]:
        return sorted(as_text(m) for m in self.client.zrange(pool_metric_names_key(pool), 0, -1))

    def pool_summary(self, pool: str, window: float, now: float) -> dict[str, dict[str, Any]]:
        """Every metric of a pool over the window: avg, max, min, sum, p95, nodes, samples."""
        names = self.metric_names(pool)
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.zrangebyscore(pool_metrics_key(pool, name), f"({now - window}", now)
        out: dict[str, dict[str, Any]] = {}
        for name, raw in zip(names, pipe.execute(), strict=True):
            stats = combine((Partial.decode(as_text(m)) for m in raw), with_p95=True)
            if stats is not None:
                out[name] = stats.to_dict()
        return out

    def node_samples(self, node_id: str, start: float, end: float) -> list[dict[str, Any]]:
        raw = self.client.zrangebyscore(node_samples_key(node_id), start, end)
        return [json.loads(m) for m in raw]

    def node_summary(self, node_id: str, window: float, now: float) -> dict[str, dict[str, Any]]:
        """Every metric of a node over the window: avg, max, min, p95 (exact), last, samples."""
        values: dict[str, list[float]] = defaultdict(list)
        for sample in self.node_samples(node_id, now - window, now):
            for name, value in sample["metrics"].items():
                values[name].append(float(value))
        return {
            name: {
                "avg": sum(vals) / len(vals),
                "max": max(vals),
                "min": min(vals),
                "p95": exact_quantile(vals),
                "last": vals[-1],
                "samples": len(vals),
            }  # fmt: skip
            for name, vals in sorted(values.items())
        }


def as_text(value: bytes | str) -> str:
    """Redis replies are str with decode_responses (Grid's clients), bytes without."""
    return value.decode() if isinstance(value, bytes) else value


# ---- an in-memory source (backtests, tests) ----------------------------------------------


class MemoryMetrics:
    """The same partials and per-minute history as MetricsStore, in memory (for backtests)."""

    def __init__(self) -> None:
        self._times: dict[tuple[str, str], list[float]] = defaultdict(list)
        self._parts: dict[tuple[str, str], list[Partial]] = defaultdict(list)
        self._minutes: dict[tuple[str, str], dict[int, dict[str, float]]] = defaultdict(dict)
        self._minute_keys: dict[tuple[str, str], list[int]] = defaultdict(list)

    def add(self, pool: str, metric: str, part: Partial) -> None:
        key = (pool, metric)
        times = self._times[key]
        at = bisect.bisect_right(times, part.ts)  # the end, when added in time order
        times.insert(at, part.ts)
        self._parts[key].insert(at, part)
        minute = history_bucket(part.ts)
        fields = self._minutes[key].get(minute)
        if fields is None:
            fields = self._minutes[key][minute] = defaultdict(float)
            bisect.insort(self._minute_keys[key], minute)
        total_field, ticks_field = history_fields(part.source)
        fields[total_field] += part.total
        fields[ticks_field] += 1

    def window(
        self, pool: str, metric: str, window: float, now: float, with_p95: bool = False
    ) -> WindowStats | None:
        times = self._times.get((pool, metric), [])
        lo = bisect.bisect_right(times, now - window)
        hi = bisect.bisect_right(times, now)
        return combine(self._parts[(pool, metric)][lo:hi], with_p95)

    def series(self, pool: str, metric: str, start: float, end: float) -> list[tuple[float, float]]:
        keys = self._minute_keys.get((pool, metric), [])
        minutes = self._minutes[(pool, metric)]
        lo = bisect.bisect_right(keys, start - HISTORY_STEP)
        hi = bisect.bisect_right(keys, end)
        return [(float(k), minute_total(minutes[k])) for k in keys[lo:hi]]
