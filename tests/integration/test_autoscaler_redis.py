"""The metrics store and the autoscaler service against a real Redis server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from grid.autoscaler.metrics import MetricsStore, exact_quantile
from grid.autoscaler.policy import PoolPolicy
from grid.autoscaler.service import (
    EVENT,
    apply_policy,
    evaluate_due_pools,
    get_policy,
    last_decisions,
    list_policies,
    load_state,
    remove_policy,
)
from grid.core.naming import decisions_key, node_samples_key, pool_history_key, pool_metrics_key
from grid.core.rtypes import Redis

T0 = 1_767_571_200.0


@pytest.fixture(params=[True, False], ids=["str", "bytes"])
def client(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Redis]:
    """Grid's clients decode replies to str; the store copes with raw bytes too."""
    conn = redis.Redis.from_url(redis_url, decode_responses=request.param)
    yield conn
    conn.close()


def samples(
    pool: str, ts: float, values: dict[str, float], metric: str = "cpu_percent"
) -> list[dict[str, Any]]:
    return [{"node_id": n, "pool": pool, "ts": ts, "metrics": {metric: v}}
            for n, v in values.items()]  # fmt: skip


# ---- metrics -------------------------------------------------------------------------------


def test_pool_aggregates_merge_every_agent(client: Redis) -> None:
    store = MetricsStore(client)
    agent_a = {f"web-a{i}": float(10 + i) for i in range(5)}  # 10..14
    agent_b = {f"web-b{i}": float(50 + i) for i in range(3)}  # 50..52
    for tick in range(6):  # 30 s of 5-second ticks
        ts = T0 + 5 * tick
        assert store.write_samples(samples("web", ts, agent_a), source="agent-a") == 5
        store.write_samples(samples("web", ts + 1, agent_b), source="agent-b")
    stats = store.window("web", "cpu_percent", 60, T0 + 30, with_p95=True)
    assert stats is not None
    values = list(agent_a.values()) + list(agent_b.values())
    assert stats.samples == 6 * 8
    assert stats.avg == pytest.approx(sum(values) / 8)
    assert (stats.min, stats.max) == (10.0, 52.0)
    assert stats.sum == pytest.approx(sum(values))  # the pool total at a tick
    assert stats.nodes == pytest.approx(8)
    assert stats.p95 == pytest.approx(exact_quantile(values * 6), rel=0.01)
    for aggregation, expected in [("avg", stats.avg), ("max", 52.0), ("sum", stats.sum)]:
        assert store.aggregate("web", "cpu_percent", aggregation, 60, T0 + 30) == expected
    assert store.aggregate("web", "cpu_percent", "avg", 60, T0 + 500) is None
    assert store.aggregate("api", "cpu_percent", "avg", 60, T0 + 30) is None


def test_window_bounds_and_custom_metrics(client: Redis) -> None:
    store = MetricsStore(client)
    store.write_samples(samples("web", T0, {"n1": 100.0}, "queue_depth"))
    store.write_samples(samples("web", T0 + 60, {"n1": 10.0}, "queue_depth"))
    assert store.aggregate("web", "queue_depth", "avg", 30, T0 + 60) == 10.0
    assert store.aggregate("web", "queue_depth", "avg", 60, T0 + 60) == 10.0  # (now-60, now]
    assert store.aggregate("web", "queue_depth", "avg", 61, T0 + 60) == 55.0
    assert store.metric_names("web") == ["queue_depth"]
    assert store.pools() == ["web"]


def test_retention_trims_samples_and_aggregates(client: Redis) -> None:
    store = MetricsStore(client, retention=60, history_retention=600)
    for minute in range(5):
        store.write_samples(samples("web", T0 + 60 * minute, {"n1": float(minute)}))
    assert client.zcard(node_samples_key("n1")) == 2  # T0+180 and T0+240: 60 s kept
    assert client.zcard(pool_metrics_key("web", "cpu_percent")) == 2
    assert 0 < client.pttl(node_samples_key("n1")) <= 60_000
    assert [s["ts"] for s in store.node_samples("n1", 0, T0 + 1000)] == [T0 + 180, T0 + 240]
    # the per-minute history outlives raw samples; complete minutes get sealed when read
    expected = [(T0 + 60 * m, float(m)) for m in range(5)]
    assert store.series("web", "cpu_percent", T0, T0 + 300) == expected
    sealed = client.zrange(pool_history_key("web", "cpu_percent"), 0, -1, withscores=True)
    assert len(sealed) == 5 and (sealed[-1][1], sealed[-2][1]) == (T0 + 180, T0 + 180)
    assert store.series("web", "cpu_percent", T0, T0 + 300) == expected
    # ... for `history_retention` (600 s here)
    store.write_samples(samples("web", T0 + 900, {"n1": 9.0}))
    assert store.series("web", "cpu_percent", 0, T0 + 900) == [(T0 + 900, 9.0)]


def test_history_totals_sum_sources_over_minutes(client: Redis) -> None:
    store = MetricsStore(client)
    for tick in range(24):  # two minutes of 5-second ticks, two agents
        ts = T0 + 5 * tick
        store.write_samples(samples("web", ts, {"a1": 100.0, "a2": 100.0}, "request_rate"), "a")
        store.write_samples(samples("web", ts, {"b1": 50.0 + tick}, "request_rate"), "b")
    series = store.series("web", "request_rate", T0, T0 + 120)
    assert [t for t, _ in series] == [T0, T0 + 60]
    assert series[0][1] == pytest.approx(200 + 50 + 5.5)  # agent b's mean over minute one
    assert series[1][1] == pytest.approx(200 + 50 + 17.5)


def test_node_and_pool_summaries(client: Redis) -> None:
    store = MetricsStore(client)
    for tick in range(10):
        store.write_samples(
            [{"node_id": "n1", "pool": "web", "ts": T0 + 5 * tick,
              "metrics": {"cpu_percent": 10.0 * tick, "rss_bytes": 1e6, "bad": "x"}}]
        )  # fmt: skip
    node = store.node_summary("n1", 300, T0 + 45)
    assert set(node) == {"cpu_percent", "rss_bytes"}  # non-numbers are dropped
    assert node["cpu_percent"] == {"avg": 45.0, "max": 90.0, "min": 0.0, "p95": 80.0,
                                   "last": 90.0, "samples": 10}  # fmt: skip
    pool = store.pool_summary("web", 300, T0 + 45)
    assert pool["cpu_percent"]["avg"] == 45.0 and pool["cpu_percent"]["nodes"] == 1
    assert pool["rss_bytes"]["p95"] == pytest.approx(1e6, rel=0.01)


# ---- the service ---------------------------------------------------------------------------


def make_policy(pool: str = "web", **fields: Any) -> PoolPolicy:
    body: dict[str, Any] = {
        "pool": pool, "min": 1, "max": 20, "evaluation_interval": "30s",
        "cooldown": {"scale_up": "1m", "scale_down": "5m"},
        "checks": [{"name": "cpu", "strategy": "threshold", "metric": "cpu_percent",
                    "upper": 80, "lower": 20, "window": "1m", "scale_up": {"add": 2}}],
        **fields,
    }  # fmt: skip
    return PoolPolicy.model_validate(body)


class Recorder:
    """The master's side: pool sizes, set_desired calls and emitted events."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = dict(sizes)
        self.calls: list[tuple[str, int, str]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    def current_size(self, pool: str) -> int:
        return self.sizes[pool]

    def set_desired(self, pool: str, n: int, reason: str) -> None:
        self.calls.append((pool, n, reason))
        self.sizes[pool] = n

    def emit(self, kind: str, payload: dict[str, Any]) -> None:
        self.events.append((kind, payload))

    def tick(self, client: Redis, now: float, **kw: Any) -> list[Any]:
        return evaluate_due_pools(client, now, self.current_size, self.set_desired, self.emit, **kw)


def load(client: Redis, pool: str, now: float, cpu: float, nodes: int = 4) -> None:
    store = MetricsStore(client)
    for tick in range(12):
        ts = now - 5 * (11 - tick)
        store.write_samples(samples(pool, ts, {f"{pool}-{i}": cpu for i in range(nodes)}))


def test_policy_crud(client: Redis) -> None:
    web, api = make_policy("web"), make_policy("api", dry_run=True)
    apply_policy(client, web)
    apply_policy(client, api)
    assert get_policy(client, "web") == web
    assert [p.pool for p in list_policies(client)] == ["api", "web"]
    apply_policy(client, make_policy("web", max=30))
    assert get_policy(client, "web").max == 30  # type: ignore[union-attr]
    assert remove_policy(client, "web") is True
    assert remove_policy(client, "web") is False
    assert get_policy(client, "web") is None
    assert [p.pool for p in list_policies(client)] == ["api"]


def test_evaluation_scales_records_and_emits(client: Redis) -> None:
    apply_policy(client, make_policy())
    master = Recorder({"web": 4})
    load(client, "web", T0, cpu=95)
    [decision] = master.tick(client, T0)
    assert (decision.action, decision.desired, decision.applied) == ("up", 6, True)
    assert master.calls == [("web", 6, decision.reason)]
    assert decision.reason.startswith("scale up 4 -> 6: cpu: cpu_percent avg 1m = 95")
    kind, payload = master.events[0]
    assert kind == EVENT == "scaling_decision"
    assert payload["votes"][0]["check"] == "cpu" and payload["desired"] == 6
    # not due again until the interval has passed
    assert master.tick(client, T0 + 10) == []
    # due: still hot, but the scale-up cooldown holds it - a no-op, recorded and emitted
    load(client, "web", T0 + 30, cpu=95)
    [held] = master.tick(client, T0 + 30)
    assert (held.action, held.desired, held.cooldown["blocked"]) == ("hold", 6, True)
    assert len(master.calls) == 1 and len(master.events) == 2
    load(client, "web", T0 + 60, cpu=95)
    [again] = master.tick(client, T0 + 60)
    assert again.desired == 8
    history = last_decisions(client, "web", 10)
    assert [d.ts for d in history] == [T0 + 60, T0 + 30, T0]
    assert history[0].to_dict() == again.to_dict()
    state = load_state(client, "web")
    assert (state.last_up, state.last_eval) == (T0 + 60, T0 + 60)


def test_dry_run_never_sets(client: Redis) -> None:
    apply_policy(client, make_policy(dry_run=True))
    master = Recorder({"web": 4})
    for i in range(3):
        load(client, "web", T0 + 60 * i, cpu=95)
        [decision] = master.tick(client, T0 + 60 * i)
        assert decision.dry_run and decision.desired == 6 and not decision.applied
    assert master.calls == []
    assert len(master.events) == 3
    assert load_state(client, "web").last_up is None


def test_no_metrics_is_a_recorded_no_op(client: Redis) -> None:
    apply_policy(client, make_policy())
    master = Recorder({"web": 4})
    [decision] = master.tick(client, T0)
    assert decision.action == "hold" and decision.votes[0].action == "error"
    assert "no samples of cpu_percent" in decision.votes[0].reason
    assert master.calls == [] and len(master.events) == 1


def test_decisions_are_bounded_and_force_evaluates(client: Redis) -> None:
    apply_policy(client, make_policy())
    master = Recorder({"web": 4})
    for i in range(7):
        master.tick(client, T0 + i, force=True, keep=5)
    assert client.llen(decisions_key("web")) == 5
    assert [d.ts for d in last_decisions(client, "web", 2)] == [T0 + 6, T0 + 5]


def test_one_failing_pool_does_not_stop_the_others(client: Redis) -> None:
    apply_policy(client, make_policy("api"))
    apply_policy(client, make_policy("web"))
    load(client, "web", T0, cpu=5)
    master = Recorder({"web": 4})  # no size for "api": current_size raises KeyError
    decisions = master.tick(client, T0)
    assert [(d.pool, d.action) for d in decisions] == [("api", "hold"), ("web", "down")]
    assert decisions[0].error is not None and "evaluation failed" in decisions[0].reason
    assert master.calls == [("web", 3, decisions[1].reason)]


def test_a_failing_set_desired_is_recorded(client: Redis) -> None:
    apply_policy(client, make_policy())
    load(client, "web", T0, cpu=95)

    def refuse(pool: str, n: int, reason: str) -> None:
        raise RuntimeError("reconciler down")

    events: list[dict[str, Any]] = []
    [decision] = evaluate_due_pools(client, T0, lambda p: 4, refuse, lambda k, d: events.append(d))
    assert not decision.applied and decision.error == "set_desired failed: reconciler down"
    assert events[0]["error"] == decision.error
    assert load_state(client, "web").last_up is None


def test_predictive_memory_survives_between_ticks(client: Redis) -> None:
    forecast = {
        "name": "f",
        "strategy": "predictive",
        "metric": "request_rate",
        "target": 100,
        "history": "30m",
        "min_history": "10m",
        "horizon": "2m",
        "shadow": True,
    }
    apply_policy(client, make_policy(checks=[forecast], evaluation_interval="1m"))
    store = MetricsStore(client)
    for minute in range(20):
        store.write_samples(samples("web", T0 + 60 * minute, {"n1": 500.0}, "request_rate"))
    master = Recorder({"web": 5})
    [first] = master.tick(client, T0 + 60 * 17)
    assert first.votes[0].details["forecast"] == pytest.approx(500)
    [second] = master.tick(client, T0 + 60 * 19 + 30)
    assert second.votes[0].details["scored"] == 1
    assert second.votes[0].details["mape"] == pytest.approx(0, abs=1e-6)
