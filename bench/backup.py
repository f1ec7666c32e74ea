"""Backup benchmark (issue 10, item 9): `grid backup create` and `restore` against the size
of the grid, with a DUMP/RESTORE copy of the same keys as the baseline in the same run.

    python bench/backup.py [--grids 1000x10:100000,5000x20:1000000] [--json]

A grid `AxN:E` is A agents with N nodes each (records written by `GridState`, as the master
does: record, per-agent index, catalogue, change stream) and E events (a buffered `EventLog`).
It starts two redis-servers (append-only off), fills the first, and measures:

1. create: `create_backup` into a temporary folder: seconds, keys/s, file bytes per key;
2. verify: reading the file back whole (checksum, counts, every line), as a restore does first;
3. restore: `restore_backup` into the empty second Redis: seconds, keys/s;
4. baseline: SCAN + pipelined DUMP of every `grid:` key of the first Redis, then pipelined
   RESTORE of the payloads into the emptied second Redis: what a DUMP-based backup costs
   (it is not portable across Redis versions, which is why Grid's format is logical).

With --json it prints one JSON object, with the machine and a "verdict" (bench/common.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine, verdict  # noqa: E402
from grid.core.backup.files import verify  # noqa: E402
from grid.core.backup.service import create_backup, restore_backup  # noqa: E402
from grid.core.connection import redis_client  # noqa: E402
from grid.core.events import EventLog, EventType  # noqa: E402
from grid.core.redis_server import EmbeddedRedis  # noqa: E402
from grid.core.settings import load_settings  # noqa: E402
from grid.core.state import AgentRecord, GridState, NodeRecord  # noqa: E402

BATCH = 1000


def fill(url: str, agents: int, per_agent: int, events: int) -> None:
    client = redis_client(url)
    state = GridState(client)
    now = time.time()
    for a in range(agents):
        state.register_agent(AgentRecord(agent_id=f"agent-{a}", last_heartbeat=now))
        state.create_nodes(
            [
                NodeRecord(
                    node_id=f"pool-{a % 5}-{a:05d}{n:03d}",
                    pool=f"pool-{a % 5}",
                    agent_id=f"agent-{a}",
                    status="running",
                    generation=a * per_agent + n,
                    created_at=now,
                )
                for n in range(per_agent)
            ]
        )
    for p in range(5):
        state.set_desired(f"pool-{p}", agents * per_agent // 5)
    log = EventLog(client, maxlen=max(events, 1), buffered=True)
    for i in range(events):
        a = (i * 7919) % agents
        log.emit(EventType.SPAWN_SUCCEEDED, f"event {i}", agent_id=f"agent-{a}", pool="pool-1")
    log.close(timeout=600)
    client.close()


def dump_restore(source: str, target: str) -> dict[str, float]:
    """The baseline: SCAN + DUMP (with PTTL) pipelined, then RESTORE pipelined."""
    src, dst = redis_client(source, decode=False), redis_client(target, decode=False)
    started = time.monotonic()
    payloads: list[tuple[Any, Any, Any]] = []
    keys = list(src.scan_iter(match="grid:*", count=1000))
    for start in range(0, len(keys), BATCH):
        pipe = src.pipeline(transaction=False)
        for key in keys[start : start + BATCH]:
            pipe.dump(key)
            pipe.pttl(key)
        replies = pipe.execute()
        payloads += [
            (k, replies[2 * i], replies[2 * i + 1])
            for i, k in enumerate(keys[start : start + BATCH])
        ]
    read = time.monotonic() - started
    size = sum(len(p) for _, p, _ in payloads if p)
    started = time.monotonic()
    for start in range(0, len(payloads), BATCH):
        pipe = dst.pipeline(transaction=False)
        for key, payload, ttl in payloads[start : start + BATCH]:
            if payload is not None:
                pipe.restore(key, max(int(ttl), 0), payload, replace=True)
        pipe.execute()
    write = time.monotonic() - started
    src.close()
    dst.close()
    return {"dump_s": round(read, 3), "restore_s": round(write, 3), "payload_bytes": size}


def run_grid(spec: str, folder: Path) -> dict[str, Any]:
    shape, _, events_text = spec.partition(":")
    agents, per_agent = (int(x) for x in shape.split("x"))
    events = int(events_text or 0)
    with tempfile.TemporaryDirectory() as tmp:
        source = EmbeddedRedis(Path(tmp) / "a", appendonly=False)
        target = EmbeddedRedis(Path(tmp) / "b", appendonly=False)
        source.start()
        target.start()
        try:
            print(f"{spec}: filling", file=sys.stderr, flush=True)
            fill(source.url, agents, per_agent, events)
            print(f"{spec}: create", file=sys.stderr, flush=True)
            made = create_backup(load_settings(redis_url=source.url), folder / spec)
            keys = made.header.total_keys
            size = made.path.stat().st_size
            started = time.monotonic()
            verify(made.path)
            verify_s = time.monotonic() - started
            print(f"{spec}: restore", file=sys.stderr, flush=True)
            done = restore_backup(load_settings(redis_url=target.url), made.path)
            print(f"{spec}: baseline", file=sys.stderr, flush=True)
            flush = redis_client(target.url)
            flush.flushall()
            flush.close()
            baseline = dump_restore(source.url, target.url)
        finally:
            source.stop()
            target.stop()
    return {
        "grid": spec,
        "nodes": agents * per_agent,
        "events": events,
        "keys": keys,
        "file_bytes": size,
        "bytes_per_key": round(size / keys, 1),
        "create_s": round(made.seconds, 3),
        "create_keys_per_s": round(keys / made.seconds),
        "verify_s": round(verify_s, 3),
        "restore_s": round(done.seconds, 3),
        "restore_keys_per_s": round(keys / done.seconds),
        "baseline": baseline,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", default="1000x10:100000,5000x20:1000000")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = [run_grid(spec, Path(folder)) for spec in args.grids.split(",")]
    largest = results[-1]
    report = {
        "machine": machine(),
        "results": results,
        # one hour is the default interval: a backup must take a small part of it
        "verdict": verdict({f"create_s ({largest['grid']})": (largest["create_s"], 60.0)}),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for r in results:
        b = r["baseline"]
        print(
            f"{r['grid']}: {r['keys']} keys, {r['file_bytes'] / 1e6:.1f} MB "
            f"({r['bytes_per_key']} B/key); create {r['create_s']}s "
            f"({r['create_keys_per_s']}/s), verify {r['verify_s']}s, restore {r['restore_s']}s "
            f"({r['restore_keys_per_s']}/s); baseline DUMP {b['dump_s']}s + RESTORE "
            f"{b['restore_s']}s ({b['payload_bytes'] / 1e6:.1f} MB)"
        )


if __name__ == "__main__":
    main()
