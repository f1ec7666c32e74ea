"""Spawn -> healthy latency of the systemd adapter on a real systemd (PID 1 in podman).

Boots the test container (tests/e2e/systemd_container.py), then spawns N grid-nodes one
after another through SystemdPlatform, timing spawn() and the first healthy /health answer,
then stops them, timing stop(). Two command boundaries are measured:

- `exec`: the adapter on the host, every systemctl/journalctl through `podman exec`
  (what the e2e tests do; each call pays podman's exec cost);
- `inside`: the same loop run by a Python inside the container, calling systemctl directly
  (what an agent on a systemd host pays).

    .venv/bin/python bench/systemd_spawn.py [--nodes 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from grid.health import wait_healthy  # noqa: E402
from grid.naming import node_labels  # noqa: E402
from grid.platforms.base import NodeSpec  # noqa: E402
from grid.platforms.systemd import SystemdConfig, SystemdPlatform  # noqa: E402

AGENT_ID = "bench-agent"


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    deciles = statistics.quantiles(ms, n=10, method="inclusive") if len(ms) > 1 else ms * 9
    return {"p50": round(statistics.median(ms), 1), "p90": round(deciles[8], 1)}


def run_loop(config: SystemdConfig, nodes: int) -> dict[str, Any]:
    """Spawn `nodes` grid-nodes in turn, wait for each to be healthy, then stop them all."""
    platform = SystemdPlatform(config, AGENT_ID)
    spawn, healthy, stop = [], [], []
    node_ids: list[str] = []
    try:
        for _ in range(nodes):
            node_id = f"bench-{secrets.token_hex(4)}"
            node_ids.append(node_id)
            spec = NodeSpec(
                node_id=node_id,
                agent_id=AGENT_ID,
                pool="bench",
                command=[sys.executable, "-m", "grid.node.server"],
                env={"PYTHONPATH": str(REPO_ROOT)},
                labels=node_labels(node_id, AGENT_ID, "bench"),
            )
            started = time.monotonic()
            handle = platform.spawn(spec)
            spawned = time.monotonic()
            if wait_healthy(handle.endpoint, 60) is None:
                raise RuntimeError(f"{node_id} never answered on {handle.endpoint}")
            spawn.append(spawned - started)
            healthy.append(time.monotonic() - started)
        while node_ids:
            started = time.monotonic()
            platform.stop(node_ids[0], grace=config.stop_timeout)  # no extra reload
            stop.append(time.monotonic() - started)
            node_ids.pop(0)
    finally:
        for node_id in node_ids:
            platform.stop(node_id, grace=1)
        platform.close()
    return {
        "nodes": nodes,
        "spawn_ms": percentiles(spawn),
        "spawn_to_healthy_ms": percentiles(healthy),
        "stop_ms": percentiles(stop),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--inside", metavar="DATA_ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:  # the in-container half: plain systemctl, units in /etc/systemd/system
        config = SystemdConfig(unit_dir="/etc/systemd/system", data_root=args.inside)
        print(json.dumps(run_loop(config, args.nodes)))
        return 0

    from tests.e2e.systemd_container import podman_missing, start_systemd_container

    missing = podman_missing()
    if missing:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="grid-systemd-bench-") as tmp:
        container = start_systemd_container(Path(tmp) / "ctr")
        try:
            result: dict[str, Any] = {"boot_ms": round(container.boot_seconds * 1000, 1)}
            result["exec"] = run_loop(container.config(), args.nodes)
            inner = container.exec(
                sys.executable, str(Path(__file__).resolve()), "--nodes", str(args.nodes),
                "--inside", str(container.data_root), timeout=600,
            )  # fmt: skip
            if inner.returncode != 0:
                raise RuntimeError(f"in-container run failed: {inner.stderr.strip()}")
            result["inside"] = json.loads(inner.stdout)
        finally:
            container.stop()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"systemd container boot: {result['boot_ms']:.0f} ms; {args.nodes} nodes each")
    for mode in ("exec", "inside"):
        row = result[mode]
        figures = ", ".join(
            f"{name} p50 {row[key]['p50']:.0f} / p90 {row[key]['p90']:.0f}"
            for name, key in (
                ("spawn", "spawn_ms"),
                ("spawn->healthy", "spawn_to_healthy_ms"),
                ("stop", "stop_ms"),
            )
        )
        print(f"{mode:>6}: {figures} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
