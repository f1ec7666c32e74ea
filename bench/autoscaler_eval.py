"""Autoscaler benchmark: metrics ingest rate and one evaluation over 1,000 nodes, real Redis.

    python bench/autoscaler_eval.py [--nodes 1000] [--agents 20] [--evals 200] [--json]

Starts its own redis-server (grid.core.redis_server.EmbeddedRedis, append-only off) and stops it.
1. History: two hours of samples at one a minute (so forecasts have data), then ten minutes
   at the agents' real cadence (every 5 s): every agent writes its nodes' samples (8 metrics
   each) in one pipelined batch per tick. Reported: node samples/s, metric values/s, and the
   latency of one agent's batch.
2. Evaluation: `evaluate_due_pools(force=True)` for one pool of all the nodes, with a
   reactive policy (3 checks over 1-2 minute windows), with the predictive example policy
   (forecast over 30 minutes of history) and with the default policy (policies/default.yaml,
   its check's memory warmed with 540 evaluations first, its most it keeps): p50/p99 of one
   evaluation. Target <= 100 ms.
3. A day of per-minute history (a 20-node pool), so the example's seasonal model (shadow)
   fits on 1,440 minutes: p50/p99 of one evaluation, and the first one (imports, sealing).

With --json it prints one JSON object instead, with the machine and a top-level "verdict"
`{name: {value, target, met}}` (bench/common.py; read by bench/run_all.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, verdict  # noqa: E402
from grid.autoscaler.metrics import MetricsStore  # noqa: E402
from grid.autoscaler.policy import PoolPolicy, load_policy_file  # noqa: E402
from grid.autoscaler.service import apply_policy, evaluate_due_pools, remove_policy  # noqa: E402
from grid.core.redis_server import EmbeddedRedis  # noqa: E402

POOL = "store"
METRICS = ("cpu_percent", "rss_bytes", "request_rate", "inflight", "latency_p50_ms",
           "latency_avg_ms", "keys", "bytes")  # fmt: skip

REACTIVE = PoolPolicy.model_validate({
    "pool": POOL, "min": 2, "max": 2000, "evaluation_interval": "15s",
    "checks": [
        {"name": "cpu", "strategy": "threshold", "metric": "cpu_percent", "window": "2m",
         "upper": 80, "lower": 30},
        {"name": "rps", "strategy": "target_value", "metric": "request_rate", "window": "1m",
         "target": 100},
        {"name": "latency", "strategy": "threshold", "metric": "latency_p50_ms",
         "aggregation": "p95", "window": "1m", "upper": 50},
    ],
})  # fmt: skip


def sample(node: str, ts: float, rng: random.Random, pool: str = POOL) -> dict[str, Any]:
    rps = rng.uniform(60, 120)
    values = {
        "cpu_percent": rng.uniform(20, 90), "rss_bytes": rng.uniform(5e7, 2e8),
        "request_rate": rps, "inflight": rng.randint(0, 20), "latency_p50_ms": rng.uniform(1, 9),
        "latency_avg_ms": rng.uniform(1, 12), "keys": rng.randint(1000, 100000),
        "bytes": rng.uniform(1e6, 1e9),
    }  # fmt: skip
    return {"node_id": node, "pool": pool, "ts": ts, "metrics": values}


def ingest(
    store: MetricsStore, agents: list[list[str]], ticks: int, spacing: float, start: float,
    rng: random.Random, pool: str = POOL,
) -> tuple[float, list[float], int]:  # fmt: skip
    """Write `ticks` rounds; return elapsed seconds, per-batch latencies, samples written."""
    latencies: list[float] = []
    written = 0
    began = time.perf_counter()
    for tick in range(ticks):
        ts = start + tick * spacing
        for index, nodes in enumerate(agents):
            batch = [sample(n, ts + index * 0.01, rng, pool) for n in nodes]
            t = time.perf_counter()
            written += store.write_samples(batch, source=f"agent-{index}")
            latencies.append(time.perf_counter() - t)
    return time.perf_counter() - began, latencies, written


def time_evaluations(
    client: Any, policy: PoolPolicy, now: float, count: int, keep_state: bool = False
) -> list[float]:
    """`count` forced evaluations; the policy is removed after, unless `keep_state` (a warm-up:
    the default policy's check keeps up to 540 interval totals in its memory)."""
    apply_policy(client, policy)  # keeps the pool's state (a check's memory)
    durations = []
    for i in range(count):
        t = time.perf_counter()
        [decision] = evaluate_due_pools(
            client,
            now + i * 0.001,
            lambda pool: 1000,
            lambda *a: None,
            lambda *a: None,
            force=True,
        )
        durations.append(time.perf_counter() - t)
        assert not [v for v in decision.votes if v.action == "error"], decision.reason
    if not keep_state:
        remove_policy(client, policy.pool)
    return durations


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--evals", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args()
    rng = random.Random(7)
    per_agent = args.nodes // args.agents
    agents = [[f"{POOL}-{a}-{n}" for n in range(per_agent)] for a in range(args.agents)]
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(data_dir=Path(tmp), appendonly=False)
        url = server.start()
        try:
            client = redis.Redis.from_url(url, decode_responses=True)
            store = MetricsStore(client)
            now = time.time()
            history_start = now - 2 * 3600 - 600
            hist_s, _, hist_n = ingest(store, agents, 120, 60.0, history_start, rng)
            live_s, latencies, live_n = ingest(store, agents, 120, 5.0, now - 600, rng)
            one_agent = [[f"{POOL}-solo-{n}" for n in range(args.nodes)]]
            solo_s, _, _ = ingest(store, one_agent, 5, 5.0, now - 25, rng, pool="solo")
            reactive = time_evaluations(client, REACTIVE, now, args.evals)
            [example] = load_policy_file(ROOT / "policies" / "predictive-costs.yaml")
            predictive = time_evaluations(client, example, now, args.evals)
            [default] = load_policy_file(ROOT / "policies" / "default.yaml")
            default = default.model_copy(update={"pool": POOL, "max": 2000})
            warm = time_evaluations(client, default, now - 600, 540, keep_state=True)
            default_policy = time_evaluations(client, default, now, args.evals)
            day = [[f"day-{n}" for n in range(20)]]
            ingest(store, day, 1500, 60.0, now - 1499 * 60, rng, pool="day")
            seasonal = time_evaluations(client, example.model_copy(update={"pool": "day"}), now, 31)
            memory = client.info("memory")["used_memory_human"]
            client.close()
        finally:
            server.stop()
    first_seasonal = seasonal.pop(0)
    runs = (("reactive", reactive), ("predictive-costs", predictive), ("default", default_policy),
            ("seasonal day", seasonal))  # fmt: skip
    del warm
    evaluation = {
        name: {
            "p50_ms": round(1000 * statistics.median(durations), 2),
            "p99_ms": round(1000 * pct(durations, 0.99), 2),
            "n": len(durations),
        }
        for name, durations in runs
    }
    result: dict[str, Any] = {
        "machine": machine(),
        "nodes": args.nodes,
        "agents": args.agents,
        "metrics_per_sample": len(METRICS),
        "ingest": {
            "history_node_samples_per_s_wall": round(hist_n / hist_s),
            "live_node_samples_per_s_wall": round(live_n / live_s),
            "live_node_samples_per_s": round(live_n / sum(latencies)),
            "live_metric_values_per_s": round(live_n * len(METRICS) / sum(latencies)),
            "agent_batch_nodes": per_agent,
            "agent_batch_p50_ms": round(1000 * pct(latencies, 0.5), 2),
            "agent_batch_p99_ms": round(1000 * pct(latencies, 0.99), 2),
            "single_batch_ms": round(1000 * solo_s / 5, 1),
        },
        "evaluation": evaluation,
        "first_seasonal_evaluation_ms": round(1000 * first_seasonal, 1),
        "redis_used_memory": memory,
    }
    result["verdict"] = verdict({
        f"evaluation p99 over {args.nodes} nodes ({name}) <= 100 ms": (stats["p99_ms"], 100.0)
        for name, stats in evaluation.items() if name != "seasonal day"
    })  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    ingest_ = result["ingest"]
    print(f"machine: {platform.node()} {platform.machine()} Python {platform.python_version()}")
    print(f"nodes {args.nodes} in {args.agents} agents, {len(METRICS)} metrics per sample")
    print(
        f"ingest (history, 1/min):  {hist_n / hist_s:9.0f} node samples/s (wall, incl. generation)"
    )
    print(
        f"ingest (live, every 5 s): {live_n / live_s:9.0f} node samples/s wall, "
        f"{ingest_['live_node_samples_per_s']}/s in write_samples "
        f"= {ingest_['live_metric_values_per_s']} metric values/s"
    )
    print(f"one agent batch of {per_agent} nodes: p50 {ingest_['agent_batch_p50_ms']:.2f} ms, "
          f"p99 {ingest_['agent_batch_p99_ms']:.2f} ms")  # fmt: skip
    print(f"one agent batch of {args.nodes} nodes: {1000 * solo_s / 5:.1f} ms")
    print(f"first evaluation with a day of history: {1000 * first_seasonal:.0f} ms")
    for name, stats in evaluation.items():
        print(f"evaluation ({name}): p50 {stats['p50_ms']:.2f} ms, "
              f"p99 {stats['p99_ms']:.2f} ms over {stats['n']}")  # fmt: skip
    print(f"redis used_memory: {memory}")
    for name, v in result["verdict"].items():
        print(f"{'met   ' if v['met'] else 'MISSED'} {name}: {v['value']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
