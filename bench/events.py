"""Event log benchmark (issue 9): write throughput and indexed queries as the log grows.

    python bench/events.py [--sizes 10000,100000,1000000] [--reps 20] [--writers 1,2,4] [--json]

Starts its own redis-server (grid.core.redis_server.EmbeddedRedis, append-only off) and stops
it. The workload is a grid of 5,000 agents x 10 nodes in 5 pools; event i comes from agent
(i * 7919) mod 5,000; six common types in turn, and one rare type (`node_fenced`) every
10,000th event. For each size, from an empty Redis:

1. fill: the log is written to that size by one buffered `EventLog` (the batched writer,
   default batch and flush settings), in this process: events/s while it grows, and the
   Redis server's CPU time per event (INFO cpu);
2. single: 2,000 unbuffered `emit` calls (one atomic script call each);
3. baseline: 20,000 plain XADDs (no index) of the same entries through a redis-py pipeline
   of 1,000, into a scratch stream, deleted after: what the issue's "38.5 k/s batched" was;
4. queries, each `--reps` times after two warm-ups (limit 50, as `grid events`): a rare type,
   one agent, one node, one pool, the rare type in one pool, one agent's page before the
   middle of the log; p50/p90/max ms. Up to `--scan-max` events, also the unindexed scan the
   old `read()` did (a filter in Python over the stream) for the rare type;
5. memory: used_memory growth per event, and MEMORY USAGE of the stream and of the indexes.

Then, on an emptied Redis, `--writers` processes each write `--per-writer` events with their
own buffered EventLog at once: the aggregate events/s of batched writers.

With --json it prints one JSON object, with the machine and a top-level "verdict"
`{name: {value, target, met}}` (bench/common.py; read by bench/run_all.py).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, repeat, summary, timed, verdict  # noqa: E402
from grid.core import naming  # noqa: E402
from grid.core.connection import redis_client  # noqa: E402
from grid.core.events import FIELDS, EventLog, EventType  # noqa: E402
from grid.core.events.ids import Bounds  # noqa: E402
from grid.core.events.model import decode_event, encode  # noqa: E402
from grid.core.events.store import all_index_keys  # noqa: E402
from grid.core.redis_server import EmbeddedRedis  # noqa: E402
from grid.core.rtypes import Redis  # noqa: E402

AGENTS, NODES_PER_AGENT, POOLS = 5000, 10, 5
COMMON = ("spawn_requested", "spawn_succeeded", "stop_requested", "stop_succeeded",
          "node_crashed", "node_restarted")  # fmt: skip
RARE, RARE_EVERY = "node_fenced", 10_000
LIMIT = 50


def subject(i: int) -> tuple[str, str, str, str]:
    """(type, agent, node, pool) of event i of the workload."""
    a = (i * 7919) % AGENTS
    kind = RARE if i % RARE_EVERY == RARE_EVERY - 1 else COMMON[i % len(COMMON)]
    node = f"pool-{a % POOLS}-{a:04d}{(i // AGENTS) % NODES_PER_AGENT}"
    return kind, f"agent-{a}", node, f"pool-{a % POOLS}"


def emit_range(log: EventLog, start: int, stop: int) -> None:
    for i in range(start, stop):
        kind, agent, node, pool = subject(i)
        log.emit(kind, f"node {node} on {agent}", agent_id=agent, node_id=node, pool=pool)


def redis_cpu(client: Redis) -> float:
    """CPU seconds the Redis server has used (user + system)."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def fill(client: Redis, start: int, stop: int) -> tuple[float, float]:
    """(events/s, Redis CPU µs per event) of one buffered writer adding events start..stop."""
    log = EventLog(client, maxlen=10**8, buffered=True)

    def write() -> None:
        emit_range(log, start, stop)
        log.close(timeout=600)

    cpu = redis_cpu(client)
    rate = (stop - start) / timed(write)
    return rate, (redis_cpu(client) - cpu) * 1e6 / (stop - start)


def single(client: Redis, count: int) -> float:
    log = EventLog(client, maxlen=10**8)
    return count / timed(lambda: emit_range(log, 10**9, 10**9 + count))


def raw_baseline(client: Redis, count: int) -> tuple[float, float]:
    """(events/s, Redis CPU µs per event) of plain pipelined XADDs of the same entries, no
    index (what the issue's 38.5 k/s "batched" was)."""
    key = naming.events_key() + ":bench-baseline"
    rows = [
        dict(zip(FIELDS, encode(k, time.time(), f"node {n}", a, n, p, {}), strict=True))
        for k, a, n, p in (subject(i) for i in range(count))
    ]

    def write() -> None:
        for start in range(0, count, 1000):
            pipe = client.pipeline(transaction=False)
            for fields in rows[start : start + 1000]:
                pipe.xadd(key, fields)  # type: ignore[arg-type]
            pipe.execute()

    cpu = redis_cpu(client)
    rate = count / timed(write)
    used = (redis_cpu(client) - cpu) * 1e6 / count
    client.delete(key)
    return rate, used


def old_scan(log: EventLog, kind: str) -> int:
    """The unindexed read the log had before: newest first, filtered in Python."""
    found = 0
    for event_id, fields in log.store.scan(Bounds(), newest_first=True):
        ev = decode_event(event_id, fields)
        if ev is not None and ev.type == kind:
            found += 1
            if found >= LIMIT:
                break
    return found


def queries(client: Redis, size: int, reps: int, scan_max: int) -> dict[str, Any]:
    log = EventLog(client, maxlen=10**8)
    _, agent, node, pool = subject(size // 2)
    first = client.xrange(naming.events_key(), count=1)[0][0]
    last = client.xrevrange(naming.events_key(), count=1)[0][0]
    middle = f"{(int(first.split('-')[0]) + int(last.split('-')[0])) // 2}-0"  # by time
    cases: dict[str, Callable[[], object]] = {
        "rare type": lambda: log.read(types={RARE}, limit=LIMIT),
        "one agent": lambda: log.read(agent_id=agent, limit=LIMIT),
        "one node": lambda: log.read(node_id=node, limit=LIMIT),
        "one pool": lambda: log.read(pool=pool, limit=LIMIT),
        "rare type in one pool": lambda: log.read(types={RARE}, pool=pool, limit=LIMIT),
        "one agent, page before the middle": lambda: log.read(
            agent_id=agent, limit=LIMIT, before=middle
        ),
    }
    if size <= scan_max:
        cases["rare type, unindexed scan (before)"] = lambda: old_scan(log, RARE)
    out: dict[str, Any] = {}
    for name, call in cases.items():
        n = reps if "unindexed" not in name else max(3, reps // 5)
        out[name] = summary(repeat(lambda c=call: timed(c), n, 2))  # type: ignore[misc]
    out["found"] = {
        "rare type": len(log.read(types={RARE}, limit=LIMIT)),
        "one agent": len(log.read(agent_id=agent, limit=LIMIT)),
        "one node": len(log.read(node_id=node, limit=LIMIT)),
    }
    return out


def memory(client: Redis, before: int, size: int) -> dict[str, Any]:
    def usage(key: str) -> int:
        return int(client.memory_usage(key, samples=0) or 0)

    stream = usage(naming.events_key())
    indexes = sum(usage(k) for k in all_index_keys([e.value for e in EventType]))
    used = int(client.info("memory")["used_memory"])
    return {
        "used_memory_per_event_bytes": round((used - before) / size, 1),
        "stream_bytes_per_event": round(stream / size, 1),
        "indexes_bytes_per_event": round(indexes / size, 1),
        "used_memory_mib": round(used / 2**20, 1),
    }


def writer_process(url: str, start: int, count: int, go: Any, done: Any) -> None:
    client = redis_client(url)
    log = EventLog(client, maxlen=10**8, buffered=True)
    go.wait()
    began = time.time()
    emit_range(log, start, start + count)
    log.close(timeout=600)
    done.put((began, time.time()))


def writers(url: str, processes: int, per_writer: int) -> float:
    """Aggregate events/s of `processes` buffered writers started together."""
    ctx = multiprocessing.get_context("spawn")
    go, done = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=writer_process, args=(url, p * per_writer, per_writer, go, done))
        for p in range(processes)
    ]
    for proc in procs:
        proc.start()
    time.sleep(2.0)  # let every interpreter start; the clock starts at `go`
    go.set()
    spans = [done.get(timeout=900) for _ in procs]
    for proc in procs:
        proc.join(60)
    elapsed: float = max(e for _, e in spans) - min(s for s, _ in spans)
    return processes * per_writer / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--scan-max", type=int, default=100_000)
    parser.add_argument("--writers", default="1,2,4")
    parser.add_argument("--per-writer", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    result: dict[str, Any] = {"machine": machine(), "sizes": {}, "writers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(data_dir=Path(tmp), appendonly=False)
        url = server.start()
        try:
            client = redis_client(url)
            for size in sizes:
                client.flushall()
                base = int(client.info("memory")["used_memory"])
                print(f"size {size}: filling", file=sys.stderr, flush=True)
                rate, cpu = fill(client, 0, size)
                row: dict[str, Any] = {
                    "fill_events_per_s": round(rate),
                    "fill_redis_cpu_us_per_event": round(cpu, 2),
                }
                row["memory"] = memory(client, base, size)
                print(f"size {size}: queries", file=sys.stderr, flush=True)
                row["queries_ms"] = queries(client, size, args.reps, args.scan_max)
                row["single_emit_per_s"] = round(single(client, 2000))
                rate, cpu = raw_baseline(client, 20_000)
                row["raw_xadd_pipeline_per_s"] = round(rate)
                row["raw_xadd_redis_cpu_us_per_event"] = round(cpu, 2)
                result["sizes"][size] = row
            for count in (int(w) for w in args.writers.split(",")):
                client.flushall()
                print(f"{count} writer process(es)", file=sys.stderr, flush=True)
                result["writers"][count] = round(writers(url, count, args.per_writer))
            client.close()
        finally:
            server.stop()
    largest = result["sizes"][max(sizes)]["queries_ms"]
    best = max(result["writers"].values())
    result["verdict"] = verdict({
        "batched writers: seconds per 100,000 events <= 1": (round(100_000 / best, 3), 1.0),
        **{f"{name} over {max(sizes)} events, p90 ms <= 50": (largest[name]["p90"], 50.0)
           for name in ("rare type", "one agent", "one node")},
    })  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_text(result)
    return 0


def print_text(result: dict[str, Any]) -> None:
    for size, row in result["sizes"].items():
        mem = row["memory"]
        print(f"== {size} events: fill {row['fill_events_per_s']}/s, single emit "
              f"{row['single_emit_per_s']}/s, raw XADD pipeline "
              f"{row['raw_xadd_pipeline_per_s']}/s; {mem['used_memory_per_event_bytes']} B/event "
              f"(stream {mem['stream_bytes_per_event']}, "
              f"indexes {mem['indexes_bytes_per_event']})")  # fmt: skip
        for name, stats in row["queries_ms"].items():
            if name != "found":
                print(f"   {name:<36} p50 {stats['p50']:>8} p90 {stats['p90']:>8} "
                      f"max {stats['max']:>8} ms")  # fmt: skip
    for count, rate in result["writers"].items():
        print(f"{count} writer process(es): {rate} events/s")
    for name, v in result["verdict"].items():
        print(f"{'met   ' if v['met'] else 'MISSED'} {name}: {v['value']}")


if __name__ == "__main__":
    sys.exit(main())
