"""Metrics benchmark (issue 9): per-pool roll-ups against the size of the grid.

    python bench/metrics.py [--sizes 1000:100,5000:500,10000:1000] [--hours 1] [--json]

(`--hours` may be a list, one per size: a full hour at 10,000 nodes takes ~45 minutes to
write here. For a fill shorter than an hour the memory at 1 h is also given, as an upper
estimate: the growth of the fill's second half carried on to the hour.)

Starts its own redis-server (grid.core.redis_server.EmbeddedRedis, append-only off) and stops
it. For each size (nodes:agents), from an empty Redis: one hour (`--hours`) of samples at the
agents' real sampling interval (`--interval`, default 5 s) for every node, 8 metrics each,
written as the agents write them (`MetricsStore.write_samples`, one batch per agent per
tick: bench/autoscaler_eval.py's `ingest`), ending now. Then:

1. writes: node samples/s through the writer, an agent's batch, and Redis CPU per agent
   tick (INFO cpu), i.e. the share of a Redis core these agents' writes take at the real
   interval; memory: INFO used_memory growth, and the keys by family;
2. evaluation: `evaluate_due_pools(force=True)` with the reactive policy of
   bench/autoscaler_eval.py (threshold on cpu_percent avg 2 m, target_value on request_rate
   avg 1 m, threshold on latency_p50_ms p95 1 m), `--evals` times; and `pool_summary` over
   5 minutes (1 s buckets) and 1 hour (minute buckets: the downsampled history), as
   `grid metrics --pool` reads them;
3. baseline, same run: a pipeline of one HGETALL per agent per tick of a 1-minute window
   (12 x agents small hashes): the least a per-agent layout reads for one window.

With --json it prints one JSON object with the machine and a top-level "verdict".
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.autoscaler_eval import POOL, REACTIVE, ingest, time_evaluations  # noqa: E402
from bench.common import machine, repeat, summary, timed, verdict  # noqa: E402
from bench.events import redis_cpu  # noqa: E402
from grid.autoscaler.metrics import MetricsStore  # noqa: E402
from grid.core.connection import redis_client  # noqa: E402
from grid.core.redis_server import EmbeddedRedis  # noqa: E402
from grid.core.rtypes import Redis  # noqa: E402

FAMILIES = ("grid:m:node:*", "grid:m:node-min:*", "grid:m:roll:*", "grid:m:pool:*")


def used_memory(client: Redis) -> int:
    return int(client.info("memory")["used_memory"])


def key_counts(client: Redis) -> dict[str, int]:
    return {f: sum(1 for _ in client.scan_iter(match=f, count=10_000)) for f in FAMILIES}


def baseline(client: Redis, agents: int) -> list[float]:
    """Seconds per pipeline of 12 x agents HGETALLs of small hashes (written first)."""
    pipe = client.pipeline(transaction=False)
    for i in range(agents * 12):
        pipe.hset(f"bench:partial:{i}", mapping={"n": 10, "s": 1.5, "lo": 1.0, "hi": 2.0})
    pipe.execute()

    def read() -> None:
        pipe = client.pipeline(transaction=False)
        for i in range(agents * 12):
            pipe.hgetall(f"bench:partial:{i}")
        pipe.execute()

    out = repeat(lambda: timed(read), 20, 2)
    client.delete(*[f"bench:partial:{i}" for i in range(agents * 12)])
    return out


def run_size(
    client: Redis, nodes: int, agents: int, hours: float, args: argparse.Namespace
) -> dict[str, Any]:
    client.flushall()
    before = used_memory(client)
    per = nodes // agents
    groups = [[f"{POOL}-{a:04d}-{i:02d}" for i in range(per)] for a in range(agents)]
    ticks = int(hours * 3600 / args.interval)
    now = time.time()
    start = now - (ticks - 1) * args.interval
    store = MetricsStore(client)
    rng = random.Random(7)
    half = ticks // 2
    cpu = redis_cpu(client)
    first = ingest(store, groups, half, args.interval, start, rng)
    middle = used_memory(client)
    second = ingest(store, groups, ticks - half, args.interval, start + half * args.interval, rng)
    elapsed, latencies, written = first[0] + second[0], first[1] + second[1], first[2] + second[2]
    redis_seconds = redis_cpu(client) - cpu
    used = used_memory(client) - before
    # growth over the second half, carried on to an hour: an upper bound for a shorter fill
    # (raw samples stop growing after 5 minutes, 1 s buckets after 10)
    rate = (used_memory(client) - middle) / ((ticks - half) * args.interval)
    hour = used + max(0.0, 3600 - ticks * args.interval) * rate
    evals = time_evaluations(client, REACTIVE, now + 1, args.evals)
    short = repeat(lambda: timed(lambda: store.pool_summary(POOL, 300, now + 1)), 10, 1)
    long = repeat(lambda: timed(lambda: store.pool_summary(POOL, 3600, now + 1)), 10, 1)
    base = baseline(client, agents)
    return {
        "nodes": nodes,
        "agents": agents,
        "samples_written": written,
        "fill_seconds": round(elapsed, 1),
        "fill_node_samples_per_s": round(written / elapsed),
        "agent_batch_ms": summary(latencies),
        "redis_cpu_ms_per_agent_tick": round(redis_seconds * 1000 / (agents * ticks), 3),
        # at the real interval: Redis CPU seconds per second for these agents' writes
        "redis_cpu_share_live": round(redis_seconds / (ticks * args.interval), 4),
        "hours_filled": hours,
        "redis_used_memory_mib": round(used / 2**20, 1),
        "redis_used_memory_1h_mib_upper_estimate": round(hour / 2**20, 1),
        "keys": key_counts(client),
        "evaluation_ms": summary(evals),
        "pool_summary_5m_ms": summary(short),
        "pool_summary_1h_ms": summary(long),
        "baseline_per_agent_reads_ms": summary(base),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--sizes", default="1000:100,5000:500,10000:1000")
    parser.add_argument("--hours", default="1", help="hours of samples, one or one per size")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--evals", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args()
    sizes = [tuple(int(x) for x in s.split(":")) for s in args.sizes.split(",")]
    hours = [float(h) for h in str(args.hours).split(",")]
    hours += [hours[-1]] * (len(sizes) - len(hours))
    result: dict[str, Any] = {"machine": machine(), "sizes": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(data_dir=Path(tmp), appendonly=False)
        client = redis_client(server.start())
        try:
            for (nodes, agents), h in zip(sizes, hours, strict=True):
                print(f"{nodes} nodes on {agents} agents: {h} h", file=sys.stderr, flush=True)
                result["sizes"].append(run_size(client, nodes, agents, h, args))
        finally:
            client.close()
            server.stop()
    largest = result["sizes"][-1]
    result["verdict"] = verdict({
        f"evaluation at {largest['nodes']} nodes on {largest['agents']} agents, p99 ms <= 50":
            (largest["evaluation_ms"]["p99"], 50.0),
        f"Redis memory at {largest['nodes']} nodes, 1 h, MiB <= 476 (500 MB)":
            (largest["redis_used_memory_1h_mib_upper_estimate"], 476.8),
    })  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in result["sizes"]:
            print(json.dumps(row))
        for name, v in result["verdict"].items():
            print(f"{'met   ' if v['met'] else 'MISSED'} {name}: {v['value']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
