"""The metrics store: node samples and per-pool aggregates in Redis.

Layout (keys from grid.core.naming), chosen so an evaluation reads O(window), not O(nodes x window):

* ``node_samples_key(node)`` - sorted set, score = time, member = JSON of one sample of every
  metric of the node; kept `NODE_RAW_RETENTION` (5 minutes, at most `retention`), expires
  when the node stops. ``node_minutes_key(node)`` - the same node downsampled: one member a
  minute (count, sum, min, max per metric), built in the writer's memory and written when
  the next minute begins (or `flush_minutes`), kept for `retention`.
* ``pool_rollup_key(pool, step, bucket)`` - the per-pool *roll-up*: one hash per pool and
  bucket of `step` seconds (tiers of 1 s, kept 10 minutes; 10 s, kept `retention`; 60 s,
  kept the longer of `retention` and `history_retention`: the downsampled history). At
  each write every source (agent) adds the summary of its nodes at that tick to the bucket
  of each tier (metrics_rollup.lua), per metric: values ``n``, their sum ``s``, writes ``w``,
  sources ``S``, ``lo``, ``hi``, the latest sample time ``t`` and a mergeable log-bucket
  sketch ``q`` for percentiles. Buckets merge by adding, so a window costs one small read
  per bucket whatever the number of agents or nodes. ``pool_metrics_key(pool, metric)``
  (sorted set, member = 1 s bucket, score = latest sample of the metric in it) lists the
  fine buckets of a metric; ``pool_sources_key(pool)`` (sorted set, score = last write) the
  sources. A minute bucket's pool total is ``s * S / w``, the sum over sources of their
  mean total (each source writing its ticks of that minute). Readers *seal* complete
  minutes into the sorted set ``pool_history_key(pool, metric)`` (member
  ``<minute>:<total>``, plus a ``sealed`` member scored with the last sealed minute), so a
  forecast reads one range plus the last minute or two: O(history) once, then O(1) reads
  per evaluation, and never O(nodes).
* ``pool_metric_names_key(pool)`` (sorted set, score = last write, trimmed and expiring with
  `retention`) and ``metric_pools_key()`` (set, expiring with the history) - what exists, for
  `grid metrics`.

Window aggregates over (now - window, now] (to the bucket: a bucket counts when its latest
sample is in the window, exact on the 1 s tier for whole-second samples):
``avg``/``min``/``max``/``p95`` over every node sample; ``sum`` is the pool total, the sum of
the window's per-tick totals over the ticks per source (writes / sources that wrote since the
window began), i.e. per source the mean of its per-tick totals, summed over sources, when the
sources tick at one rate; ``nodes`` the same for the number of reporting nodes. ``p95`` comes
from the sketch, exact to 1 % relative.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.client

from grid.core.naming import (
    metric_pools_key,
    node_minutes_key,
    node_samples_key,
    pool_history_key,
    pool_metric_names_key,
    pool_metrics_key,
    pool_rollup_key,
    pool_sources_key,
)
from grid.core.rtypes import Redis
from grid.core.scripts import LuaScript

DEFAULT_RETENTION = 3600.0
DEFAULT_HISTORY_RETENTION = 86400.0
HISTORY_STEP = 60.0
_WATERMARK = "sealed"  # member of the sealed history whose score is the last sealed minute
QUANTILE = 0.95
# Roll-up tiers, finest first: bucket seconds and how long kept (1 s buckets at most 10
# minutes; 10 s ones for `retention`; minutes for the longer of `retention` and
# `history_retention`: the downsampled history). A window is read from the finest tier that
# holds it in at most MAX_BUCKETS buckets: 1 s up to 5 minutes, 10 s up to 50, minutes beyond.
FINE_RETENTION = 600.0
# A node's own samples are kept as they are for NODE_RAW_RETENTION (never past `retention`),
# and downsampled to minutes (count, sum, min, max per metric) for `retention`.
NODE_RAW_RETENTION = 300.0
# The tiers whose buckets keep a percentile sketch (the minutes keep sums: a p95 over more
# than 50 minutes is not answered; the history needs totals only).
SKETCH_TIERS = frozenset({1, 10})
MAX_BUCKETS = 300

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
        key = _key(abs(value))
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


def sketch_cells(values: Iterable[float]) -> list[str | int]:
    """The sketch of `values` as flat (roll-up cell, count) pairs: p<k> and m<k> for the
    positive and negative buckets, z for zeros."""
    sketch = Sketch()
    for value in values:
        sketch.add(value)
    cells: list[str | int] = []
    for prefix, side in (("p", sketch.pos), ("m", sketch.neg)):
        for key, count in side.items():
            cells += [f"{prefix}{key}", count]
    if sketch.zero:
        cells += ["z", sketch.zero]
    return cells


def cell_names(low: float, high: float) -> list[str]:
    """Every sketch cell a value in [low, high] can fall in (what a p95 read asks for)."""
    names: list[str] = []
    if high > _TINY:
        names += [f"p{k}" for k in range(_key(max(low, _TINY)), _key(high) + 1)]
    if low < -_TINY:
        names += [f"m{k}" for k in range(_key(max(-high, _TINY)), _key(-low) + 1)]
    if low <= _TINY and high >= -_TINY:
        names.append("z")
    return names


def _key(magnitude: float) -> int:
    return math.ceil(math.log(magnitude) / _LN_GAMMA)


def merge_buckets(
    rows: Iterable[Sequence[Any]], sources: int, low: float, high: float
) -> tuple[WindowStats | None, list[int]]:
    """Merge the roll-up fields (n, s, w, lo, hi, t; str or bytes) of one metric in the
    buckets of a window (low, high] written by `sources` sources; also the positions of the
    buckets that count (their latest sample, t, is in the window), for a p95 read."""
    count, total, writes = 0, 0.0, 0
    least, most = math.inf, -math.inf
    used: list[int] = []
    for at, row in enumerate(rows):
        n, s, w, lo, hi, t = (None if v is None else as_text(v) for v in row)
        if n is None or t is None or not low < float(t) <= high:
            continue  # no such metric in this bucket, or its samples are outside the window
        used.append(at)
        count += int(n)
        total += float(s or 0.0)
        writes += int(w or 0)
        least, most = min(least, float(lo or math.inf)), max(most, float(hi or -math.inf))
    if count <= 0 or writes <= 0:
        return None, used
    ticks = writes / max(sources, 1)  # ticks per source in the window
    stats = WindowStats(total / count, most, least, total / ticks, count / ticks, count)
    return stats, used


def sketch_quantile(names: Sequence[str], rows: Iterable[Sequence[Any]]) -> float | None:
    """The p95 of the sketch cells `names` (their counts in each bucket, HMGET rows)."""
    sketch = Sketch()
    for row in rows:
        for name, value in zip(names, row, strict=True):
            if value is None:
                continue
            count = int(as_text(value))
            if name == "z":
                sketch.zero += count
            else:
                side = sketch.pos if name[0] == "p" else sketch.neg
                key = int(name[1:])
                side[key] = side.get(key, 0) + count
    return sketch.quantile(QUANTILE)


def history_bucket(ts: float, step: float = HISTORY_STEP) -> int:
    return int(ts // step * step)


def history_fields(source: str) -> tuple[str, str]:
    """The fields (total, ticks) a source increments in a minute's history hash."""
    return f"{source}|s", f"{source}|n"


def _minute_fields(metric: str) -> list[str]:
    return [f"{metric}|s", f"{metric}|w", f"{metric}|S"]


def rollup_minute_total(row: Sequence[Any]) -> float | None:
    """A minute's pool total from its roll-up bucket (sum, writes, sources): the sum over
    sources of their mean total, when each source wrote the same number of ticks."""
    total, writes, sources = (None if v is None else float(as_text(v)) for v in row)
    if total is None or not writes or not sources:
        return None
    return total * sources / writes


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
        self.tiers: tuple[tuple[int, float], ...] = (
            (1, min(FINE_RETENTION, retention)),
            (10, retention),
            (int(HISTORY_STEP), max(retention, history_retention)),
        )
        self._rollup = LuaScript.named("metrics_rollup", client)
        self._written: dict[tuple[str, str, int], tuple[int, set[str]]] = {}
        self._minutes: dict[str, tuple[int, str, dict[str, list[float]]]] = {}

    # -- writes --

    def write_samples(
        self, samples: Iterable[Sample | Mapping[str, Any]], source: str = "local"
    ) -> int:
        """Write one batch (typically one agent's nodes at one tick) in one pipeline."""
        batch = [Sample.of(s) for s in samples]
        if not batch:
            return 0
        pipe = self.client.pipeline(transaction=False)
        raw_keep = min(NODE_RAW_RETENTION, self.retention)
        by_pool: dict[str, list[Sample]] = defaultdict(list)
        for sample in batch:
            key = node_samples_key(sample.node_id)
            member = json.dumps(
                {"ts": sample.ts, "pool": sample.pool, "metrics": sample.metrics},
                separators=(",", ":"),
            )
            pipe.zadd(key, {member: sample.ts})
            pipe.zremrangebyscore(key, "-inf", f"({sample.ts - raw_keep}")
            pipe.pexpire(key, int(raw_keep * 1000))
            self._downsample(pipe, sample)
            by_pool[sample.pool].append(sample)
        for pool, group in by_pool.items():
            self._write_pool(pipe, pool, group, source)
        pipe.execute()
        return len(batch)

    def _downsample(self, pipe: redis.client.Pipeline[str], sample: Sample) -> None:
        """Add a node's sample to its minute; a sample of a later minute writes the one
        before (this writer is the node's agent: the minute is built in memory)."""
        minute = history_bucket(sample.ts)
        held = self._minutes.get(sample.node_id)
        if held is not None and held[0] != minute:
            self._write_minute(pipe, sample.node_id, *held)
            held = None
        if held is None:
            held = self._minutes[sample.node_id] = (minute, sample.pool, {})
        cells = held[2]
        for name, value in sample.metrics.items():
            cell = cells.get(name)
            if cell is None:
                cells[name] = [1, value, value, value]
            else:
                cell[0] += 1
                cell[1] += value
                cell[2] = min(cell[2], value)
                cell[3] = max(cell[3], value)

    def _write_minute(
        self,
        pipe: redis.client.Pipeline[str],
        node_id: str,
        minute: int,
        pool: str,
        cells: dict[str, list[float]],
    ) -> None:
        key = node_minutes_key(node_id)
        member = json.dumps({"ts": minute, "pool": pool, "metrics": cells}, separators=(",", ":"))
        pipe.zadd(key, {member: minute})
        pipe.zremrangebyscore(key, "-inf", f"({minute - self.retention}")
        pipe.pexpire(key, int(self.retention * 1000))

    def flush_minutes(self) -> None:
        """Write every node's minute in progress (a sampler that stops)."""
        if self._minutes:
            pipe = self.client.pipeline(transaction=False)
            for node_id, held in self._minutes.items():
                self._write_minute(pipe, node_id, *held)
            self._minutes.clear()
            pipe.execute()

    def _write_pool(
        self, pipe: redis.client.Pipeline[str], pool: str, group: list[Sample], source: str
    ) -> None:
        ts = max(s.ts for s in group)
        values: dict[str, list[float]] = defaultdict(list)
        for sample in group:
            for name, value in sample.metrics.items():
                values[name].append(value)
        if not values:
            return
        source = _clean(source)
        summaries = [
            (name, len(vals), repr(float(sum(vals))), repr(min(vals)), repr(max(vals)),
             sketch_cells(vals))
            for name, vals in values.items()
        ]  # fmt: skip
        for step, keep in self.tiers:
            bucket = int(ts // step * step)
            firsts = self._first_writes(source, pool, step, bucket, values)
            with_sketch = step in SKETCH_TIERS
            args: list[Any] = [int(keep * 1000), repr(ts)]
            for (name, count, total, lo, hi, cells), first in zip(summaries, firsts, strict=True):
                cells = cells if with_sketch else []
                args += [name, int(first), count, total, lo, hi, len(cells) // 2, *cells]
            self._rollup(keys=[pool_rollup_key(pool, step, bucket)], args=args, client=pipe)
        fine_bucket, fine_keep = str(int(ts)), self.tiers[0][1]
        for name in values:
            index = pool_metrics_key(pool, name)
            pipe.zadd(index, {fine_bucket: ts}, gt=True)
            pipe.zremrangebyscore(index, "-inf", f"({ts - fine_keep}")
            pipe.pexpire(index, int(fine_keep * 1000))
        keep_ms = int(self.retention * 1000)
        names = pool_metric_names_key(pool)  # scored by last write: unwritten for `retention`, gone
        pipe.zadd(names, dict.fromkeys(values, ts))
        pipe.zremrangebyscore(names, "-inf", f"({ts - self.retention}")
        pipe.pexpire(names, keep_ms)
        sources = pool_sources_key(pool)
        pipe.zadd(sources, {source: ts}, gt=True)
        pipe.zremrangebyscore(sources, "-inf", f"({ts - self.retention}")
        pipe.pexpire(sources, keep_ms)
        pipe.sadd(metric_pools_key(), pool)
        pipe.pexpire(metric_pools_key(), int(self.tiers[-1][1] * 1000))

    def _first_writes(
        self, source: str, pool: str, step: int, bucket: int, names: Iterable[str]
    ) -> list[bool]:
        """For each name, whether this is `source`'s first write of it to the bucket (the
        bucket's source count, for the per-source mean of `series`)."""
        key = (source, pool, step)
        held = self._written.get(key)
        if held is None or held[0] != bucket:
            held = self._written[key] = (bucket, set())
        seen = held[1]
        out = [name not in seen for name in names]
        seen.update(names)
        return out

    # -- reads (MetricsSource) --

    def window(
        self, pool: str, metric: str, window: float, now: float, with_p95: bool = False
    ) -> WindowStats | None:
        return self.windows(pool, [metric], window, now, with_p95)[metric]

    def tier_for(self, window: float) -> int:
        """The bucket size (s) a window is read at: the finest tier that holds the whole
        window in at most MAX_BUCKETS buckets."""
        for step, keep in self.tiers:
            if window <= keep and window / step <= MAX_BUCKETS:
                return step
        return self.tiers[-1][0]

    def windows(
        self, pool: str, metrics: Sequence[str], window: float, now: float, with_p95: bool
    ) -> dict[str, WindowStats | None]:
        """Window aggregates of several metrics of a pool in two round trips: which buckets
        and how many sources, then the metrics' fields of each bucket. 1 s buckets come from
        each metric's index; coarser ones are every bucket the window touches."""
        step = self.tier_for(window)
        low = now - window
        pipe = self.client.pipeline(transaction=False)
        pipe.zcount(pool_sources_key(pool), f"({low}", "+inf")
        if step == 1:
            for metric in metrics:
                pipe.zrangebyscore(pool_metrics_key(pool, metric), f"({low}", now)
        sources, *listed = pipe.execute()
        touched = list(range(int(low // step * step), int(now) + 1, step))
        buckets = (  # members that are not whole seconds: partials of the previous layout
            [[int(b) for b in map(as_text, found) if b.isdigit()] for found in listed]
            if step == 1
            else None
        )
        chosen = [buckets[at] if buckets is not None else touched for at in range(len(metrics))]
        pipe = self.client.pipeline(transaction=False)
        for metric, keys in zip(metrics, chosen, strict=True):
            fields = [f"{metric}|{f}" for f in ("n", "s", "w", "lo", "hi", "t")]
            for bucket in keys:
                pipe.hmget(pool_rollup_key(pool, step, bucket), fields)
        replies = iter(pipe.execute())
        out: dict[str, WindowStats | None] = {}
        wanted: list[tuple[str, WindowStats, list[int], list[str]]] = []
        for metric, keys in zip(metrics, chosen, strict=True):
            stats, used = merge_buckets([next(replies) for _ in keys], int(sources), low, now)
            out[metric] = stats
            if with_p95 and stats is not None and step in SKETCH_TIERS:
                names = cell_names(stats.min, stats.max)
                wanted.append((metric, stats, [keys[i] for i in used], names))
        if wanted:  # a third round trip: the sketch cells the window's values can be in
            pipe = self.client.pipeline(transaction=False)
            for metric, _, keys, names in wanted:
                fields = [f"{metric}|{name}" for name in names]
                for bucket in keys:
                    pipe.hmget(pool_rollup_key(pool, step, bucket), fields)
            rows = iter(pipe.execute())
            for metric, stats, keys, names in wanted:
                p95 = sketch_quantile(names, [next(rows) for _ in keys])
                out[metric] = dataclasses.replace(stats, p95=p95)
        return out

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
            pipe.hmget(pool_rollup_key(pool, int(HISTORY_STEP), bucket), _minute_fields(metric))
        seal: dict[str | bytes, float] = {}
        sealed_to = None
        for bucket, row in zip(missing, pipe.execute() if missing else [], strict=True):
            complete = bucket + 2 * HISTORY_STEP <= end  # a minute of grace for late writes
            minute = rollup_minute_total(row)
            if minute is not None:
                totals[bucket] = minute
                if complete:
                    seal[f"{bucket}:{minute!r}"] = bucket
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
        stats = self.windows(pool, self.metric_names(pool), window, now, with_p95=True)
        return {name: s.to_dict() for name, s in stats.items() if s is not None}

    def node_samples(self, node_id: str, start: float, end: float) -> list[dict[str, Any]]:
        raw = self.client.zrangebyscore(node_samples_key(node_id), start, end)
        return [json.loads(m) for m in raw]

    def node_summary(self, node_id: str, window: float, now: float) -> dict[str, dict[str, Any]]:
        """Every metric of a node over the window: avg, max, min, p95 (exact), last, samples.
        A window longer than the raw samples are kept is read from the node's minutes (p95
        and last then None: a minute keeps count, sum, min and max)."""
        if window > min(NODE_RAW_RETENTION, self.retention):
            return self._node_minutes_summary(node_id, window, now)
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

    def node_minutes(self, node_id: str, start: float, end: float) -> list[dict[str, Any]]:
        raw = self.client.zrangebyscore(node_minutes_key(node_id), start, end)
        return [json.loads(m) for m in raw]

    def _node_minutes_summary(
        self, node_id: str, window: float, now: float
    ) -> dict[str, dict[str, Any]]:
        acc: dict[str, list[float]] = {}
        for minute in self.node_minutes(node_id, history_bucket(now - window), now):
            for name, (n, total, lo, hi) in minute["metrics"].items():
                cell = acc.setdefault(name, [0, 0.0, math.inf, -math.inf])
                cell[0] += n
                cell[1] += total
                cell[2], cell[3] = min(cell[2], lo), max(cell[3], hi)
        return {
            name: {
                "avg": total / n,
                "max": hi,
                "min": lo,
                "p95": None,
                "last": None,
                "samples": int(n),
            }  # fmt: skip
            for name, (n, total, lo, hi) in sorted(acc.items())
            if n
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
