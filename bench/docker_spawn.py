"""How fast the Docker adapter brings up a node: spawn → first /health 200, as an agent sees it.

Each round calls `DockerPlatform.spawn` (create and start a container with its data volume,
host network) for grid-node in the busybox test image (tests/e2e/docker_support.py), polls
/health with `grid.health.wait_healthy` (what agents use), then `stop`s it (container and
volume removed). Needs a daemon: scripts/docker-up.sh.

    .venv/bin/python bench/docker_spawn.py [--count 10] [--warmup 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: bench.*, tests.*

from bench.node_spawn import repeat, summary_ms  # noqa: E402
from grid.health import wait_healthy  # noqa: E402
from grid.platforms.base import NodeSpec  # noqa: E402
from grid.platforms.docker import DockerPlatform  # noqa: E402
from tests.e2e.docker_support import (  # noqa: E402
    docker_client,
    docker_config,
    ensure_test_image,
)

AGENT_ID = "bench-agent"
TIMEOUT = 30.0


def spawn_once(adapter: DockerPlatform) -> dict[str, float]:
    """One round; times in seconds from the spawn call."""
    spec = NodeSpec(
        node_id=f"bench-{secrets.token_hex(4)}",
        agent_id=AGENT_ID,
        pool="bench",
        command=["grid-node"],
    )
    try:
        start = time.perf_counter()
        handle = adapter.spawn(spec)
        spawned = time.perf_counter() - start
        if wait_healthy(handle.endpoint, TIMEOUT) is None:
            raise RuntimeError(
                f"{spec.node_id} never answered /health: {adapter.logs(spec.node_id)}"
            )
        healthy = time.perf_counter() - start
        begin_stop = time.perf_counter()
        adapter.stop(spec.node_id, grace=5)
        return {"spawn": spawned, "healthy": healthy, "stop": time.perf_counter() - begin_stop}
    finally:
        adapter.stop(spec.node_id, grace=0)  # idempotent; removes what a failed round left


def run(count: int, warmup: int) -> dict[str, Any]:
    client = docker_client()
    if client is None:
        raise SystemExit("no docker daemon answers: run scripts/docker-up.sh")
    problem = ensure_test_image(client)
    if problem:
        raise SystemExit(problem)
    info = client.info()
    client.close()
    adapter = DockerPlatform(docker_config(), AGENT_ID)
    try:
        rounds = repeat(lambda: spawn_once(adapter), count, warmup)
    finally:
        adapter.close()
    return {
        "count": count,
        "docker": info.get("ServerVersion"),
        "storage_driver": info.get("Driver"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "spawn_to_health_ms": summary_ms([r["healthy"] for r in rounds]),
        "spawn_call_ms": summary_ms([r["spawn"] for r in rounds]),
        "stop_call_ms": summary_ms([r["stop"] for r in rounds]),
    }


def print_human(result: dict[str, Any]) -> None:
    print(
        f"docker spawn, n={result['count']}, docker {result['docker']} "
        f"({result['storage_driver']}), python {result['python']}, {result['cpus']} cpus"
    )
    rows = [
        ("spawn() -> /health 200", "spawn_to_health_ms"),
        ("spawn() returns", "spawn_call_ms"),
        ("stop() (container+volume)", "stop_call_ms"),
    ]
    print(f"{'':28} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  (ms)")
    for label, key in rows:
        s = result[key]
        print(f"{label:28} {s['p50']:8.1f} {s['p90']:8.1f} {s['p99']:8.1f} {s['max']:8.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=10, help="spawns to measure")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured spawns first")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args()
    if args.count < 1 or args.warmup < 0:
        parser.error("--count must be >= 1 and --warmup >= 0")
    result = run(args.count, args.warmup)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_human(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
