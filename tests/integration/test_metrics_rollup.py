"""The per-pool roll-ups on a real Redis agree with the raw samples they summarise, at every
tier (1 s, 10 s, minutes), and long windows are read from the downsampled tiers: the pool's
minute buckets and the nodes' minutes."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import pytest

from grid.autoscaler.metrics import MetricsStore, exact_quantile
from grid.core.connection import redis_client
from grid.core.naming import node_minutes_key, node_samples_key
from grid.core.rtypes import Redis

T0 = 1_767_571_200.0  # a whole hour: tier buckets align with it
AGENTS, NODES, TICKS, STEP = 4, 3, 240, 5.0  # 20 minutes of 5-second ticks


@pytest.fixture
def client(redis_url: str) -> Iterator[Redis]:
    with contextlib.closing(redis_client(redis_url)) as c:
        yield c


@pytest.fixture
def filled(client: Redis) -> tuple[MetricsStore, list[tuple[float, str, str, float]]]:
    """Four agents of three nodes, each agent ticking at its own offset in the 5 s period;
    returns the store and every raw (ts, agent, node, cpu) written."""
    store = MetricsStore(client)
    rng = random.Random(3)
    raw: list[tuple[float, str, str, float]] = []
    for tick in range(TICKS):
        for a in range(AGENTS):
            ts = T0 + tick * STEP + a  # whole seconds, as the 1 s tier is exact for them
            batch = []
            for n in range(NODES):
                value = rng.uniform(1, 100)
                node = f"n{a}-{n}"
                raw.append((ts, f"agent-{a}", node, value))
                batch.append({"node_id": node, "pool": "web", "ts": ts,
                              "metrics": {"cpu_percent": value}})  # fmt: skip
            store.write_samples(batch, source=f"agent-{a}")
    return store, raw


@pytest.mark.parametrize(("window", "tier"), [(60, 1), (300, 1), (600, 10), (1200, 10), (3600, 60)])
def test_window_aggregates_agree_with_the_raw_samples(
    filled: tuple[MetricsStore, list[tuple[float, str, str, float]]], window: int, tier: int
) -> None:
    store, raw = filled
    now = T0 + TICKS * STEP - 1  # the last ts written: every tier's buckets end at it
    assert store.tier_for(window) == tier
    # a bucket counts, whole, when its latest sample is in the window (exact at 1 s)
    latest: dict[float, float] = {}
    for ts, *_ in raw:
        bucket = ts // tier * tier
        latest[bucket] = max(latest.get(bucket, ts), ts)
    inside = [r for r in raw if now - window < latest[r[0] // tier * tier] <= now]
    values = [v for *_, v in inside]
    ticks: dict[str, dict[float, float]] = {}
    for ts, agent, _, value in inside:
        ticks.setdefault(agent, {}).setdefault(ts, 0.0)
        ticks[agent][ts] += value
    pool_sum = sum(sum(t.values()) / len(t) for t in ticks.values())
    stats = store.window("web", "cpu_percent", window, now, with_p95=True)
    assert stats is not None
    assert stats.samples == len(values)
    assert stats.avg == pytest.approx(sum(values) / len(values), rel=1e-9)
    assert (stats.min, stats.max) == (min(values), max(values))
    assert stats.sum == pytest.approx(pool_sum, rel=1e-9)
    assert stats.nodes == pytest.approx(AGENTS * NODES, rel=1e-9)
    if tier == 60:  # the minutes keep no sketch: no p95 over more than 50 minutes
        assert stats.p95 is None
    else:
        assert stats.p95 == pytest.approx(exact_quantile(values), rel=0.02)


def test_minute_history_is_the_per_source_mean_total(
    filled: tuple[MetricsStore, list[tuple[float, str, str, float]]],
) -> None:
    store, raw = filled
    series = dict(store.series("web", "cpu_percent", T0, T0 + 600))
    for minute in (T0, T0 + 60, T0 + 300):
        per_agent: dict[str, dict[float, float]] = {}
        for ts, agent, _, value in raw:
            if minute <= ts < minute + 60:
                per_agent.setdefault(agent, {}).setdefault(ts, 0.0)
                per_agent[agent][ts] += value
        want = sum(sum(t.values()) / len(t) for t in per_agent.values())
        assert series[minute] == pytest.approx(want, rel=1e-9)


def test_grid_metrics_reads_long_windows_from_the_downsampled_tiers(
    client: Redis, filled: tuple[MetricsStore, list[tuple[float, str, str, float]]]
) -> None:
    store, raw = filled
    now = T0 + TICKS * STEP - 1
    summary = store.pool_summary("web", 1200, now)["cpu_percent"]
    values = [v for ts, *_, v in raw]  # the window holds the whole fill
    assert summary["samples"] == len(values)
    assert summary["avg"] == pytest.approx(sum(values) / len(values), rel=1e-9)
    assert summary["max"] == max(values)
    # a node keeps 5 minutes of raw samples, and its minutes for the whole retention
    node = "n1-2"
    mine = [(ts, v) for ts, _, n, v in raw if n == node]
    kept = client.zrange(node_samples_key(node), 0, -1, withscores=True)
    assert [s for _, s in kept] == [ts for ts, _ in mine if ts >= mine[-1][0] - 300]
    assert client.zcard(node_minutes_key(node)) == 19  # the 20th minute is still in memory
    long = store.node_summary(node, 1200, now)["cpu_percent"]
    done = [v for ts, v in mine if ts < T0 + 19 * 60]
    assert long["samples"] == len(done) and long["p95"] is None
    assert long["avg"] == pytest.approx(sum(done) / len(done), rel=1e-9)
    assert (long["min"], long["max"]) == (min(done), max(done))
    short = store.node_summary(node, 60, now)["cpu_percent"]
    assert short["samples"] == 12 and short["p95"] is not None  # raw: exact p95
    store.flush_minutes()  # a sampler that stops writes the minutes in progress
    assert client.zcard(node_minutes_key(node)) == 20
