"""Self-healing times of a real local grid: node crash, agent kill, leader kill.

Starts its own append-only Redis, masters and agents as processes (the test harness
`tests.chaos.harness.ChaosGrid`), with the timings below, and measures:

- node kill -9 -> the same node running and answering /health again (each kill hits a
  different node, so every restart is a first crash with the base backoff);
- agent kill -9 -> the pool back at its desired size, all running (on the other agent);
  the agent is then started again (its stale nodes are fenced) before the next round;
- leader master kill -9 -> the standby elected (leader_elected) and acting (a scale-up
  requested right after the kill is placed by the new leader).

    .venv/bin/python bench/chaos.py [--kills 10] [--agent-rounds 3] [--leader-rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from grid.core import naming  # noqa: E402
from grid.core.celery_app import app, configure  # noqa: E402
from grid.core.redis_server import EmbeddedRedis  # noqa: E402
from grid.core.state import NodeRecord  # noqa: E402
from grid.workers.agent.health import probe  # noqa: E402
from tests.chaos.harness import ChaosGrid, assert_invariants  # noqa: E402
from tests.helpers import wait_for  # noqa: E402

# Defaults are heartbeat 5 s / degraded 15 s / offline 30 s / lease 10 s / backoff 1 s; these are
# the same shape, tightened the way a latency-sensitive deployment would set them.
TIMINGS = {
    "GRID_HEARTBEAT_INTERVAL": "1",
    "GRID_DEGRADED_AFTER": "3",
    "GRID_OFFLINE_AFTER": "6",
    "GRID_LEASE_TTL": "5",
    "GRID_HEALTH_INTERVAL": "0.5",
    "GRID_RECONCILE_INTERVAL": "2",
    "GRID_RESTART_BACKOFF_BASE": "0.1",
    "GRID_STOP_GRACE": "3",
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 3),
        "p90": round(pct(values, 0.9), 3),
        "max": round(max(values), 3),
    }


def node_crashes(grid: ChaosGrid, kills: int) -> dict[str, Any]:
    grid.scale(kills)
    nodes = grid.wait_settled(timeout=120)
    healed, noticed = [], []
    for victim in nodes[:kills]:
        mark = grid.mark()
        killed_at = grid.kill_node(victim)

        def back(victim: NodeRecord = victim) -> bool:
            rec = grid.state.node(victim.node_id)
            if not rec or rec.status != "running" or rec.pid == victim.pid:
                return False
            return probe(rec.endpoint, timeout=0.5) is not None

        wait_for(back, 30, interval=0.005, what=f"{victim.node_id} healthy again")
        healed.append(time.time() - killed_at)
        crashed = grid.wait_event("node_crashed", since=mark, node_id=victim.node_id)[0]
        noticed.append(crashed.ts - killed_at)
    assert_invariants(grid)
    return {"healthy_again_s": summary(healed), "crash_noticed_s": summary(noticed)}


def agent_kills(grid: ChaosGrid, rounds: int, size: int) -> dict[str, Any]:
    grid.scale(size)
    grid.wait_settled(timeout=120)
    full, offline = [], []
    for _ in range(rounds):
        nodes = grid.wait_settled(timeout=120)
        gone = {n.node_id for n in nodes if n.agent_id == "agent-1"}
        mark = grid.mark()
        killed_at = time.time()
        grid.kill("agent-1")

        def at_strength(gone: set[str] = gone) -> bool:
            now = grid.state.nodes(pool="default")
            return len(now) == size and all(
                n.status == "running" and n.node_id not in gone for n in now
            )

        wait_for(at_strength, 120, interval=0.01, what="pool at strength without agent-1")
        full.append(time.time() - killed_at)
        ev = grid.find_events("agent_offline", since=mark, agent_id="agent-1")
        offline.append(ev[0].ts - killed_at)
        grid.start_agent("agent-1", 20)
        grid.wait_agents("agent-1", timeout=60)
        assert_invariants(grid)
        # spread the pool over both agents again for the next round
        grid.scale(0)
        grid.wait_settled(timeout=120)
        grid.scale(size)
        grid.wait_settled(timeout=120)
    return {"pool_at_strength_s": summary(full), "offline_detected_s": summary(offline)}


def answers(worker: str) -> bool:
    """The Celery worker `worker` answers a control ping (the master is up and standing by)."""
    return bool(app.control.ping(destination=[worker], timeout=0.5))


def leader_kills(grid: ChaosGrid, rounds: int) -> dict[str, Any]:
    elected, acting = [], []
    for _ in range(rounds):
        leader = wait_for(grid.leader_id, 30, what="a leader") or ""
        size = grid.expected.get("default", 0) + 1
        mark = grid.mark()
        killed_at = time.time()
        grid.kill(leader)
        grid.scale(size)  # saved now, placed only by the next leader
        ev = grid.wait_event("leader_elected", since=mark, timeout=60)[0]
        elected.append(ev.ts - killed_at)
        placed = grid.wait_event("spawn_requested", since=mark, timeout=60)[0]
        acting.append(placed.ts - killed_at)
        grid.wait_settled(timeout=60)
        grid.start_master(leader)  # a standby again for the next round
        wait_for(partial(answers, naming.master_worker_name(leader, socket.gethostname())), 60,
                 what=f"{leader} answering")  # fmt: skip
    assert_invariants(grid)
    return {"new_leader_s": summary(elected), "new_leader_acting_s": summary(acting)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10, help="node kills (one per node)")
    parser.add_argument("--agent-rounds", type=int, default=3)
    parser.add_argument("--leader-rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()

    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpu, "
        f"{psutil.virtual_memory().total // 2**30} GiB, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "timings": TIMINGS,
    }
    with tempfile.TemporaryDirectory(prefix="grid-chaos-") as tmp:
        server = EmbeddedRedis(data_dir=Path(tmp) / "redis")
        server.start()
        grid = ChaosGrid(server.url, Path(tmp) / "home", env=TIMINGS)
        configure(server.url)
        leaked: list[int] = []
        try:
            grid.up(masters=("master-a", "master-b"), max_nodes=20, timeout=120)
            results["node_crash"] = node_crashes(grid, args.kills)
            results["agent_kill"] = agent_kills(grid, args.agent_rounds, 8)
            results["leader_kill"] = leader_kills(grid, args.leader_rounds)
        finally:
            leaked = grid.close()
            server.stop()
        if leaked:
            raise SystemExit(f"node processes left behind: {leaked}")

    offline = float(TIMINGS["GRID_OFFLINE_AFTER"])
    lease = float(TIMINGS["GRID_LEASE_TTL"])
    checks = [
        ("node kill -> healthy again (p50)", results["node_crash"]["healthy_again_s"]["p50"], 1.0),
        ("agent kill -> pool at strength (max)",
         results["agent_kill"]["pool_at_strength_s"]["max"], offline + 3),
        ("leader kill -> new leader acting (max)",
         results["leader_kill"]["new_leader_acting_s"]["max"], lease + 1),
    ]  # fmt: skip
    results["targets"] = [
        {"what": what, "value_s": value, "target_s": target, "met": value <= target}
        for what, value, target in checks
    ]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"machine: {results['machine']}\ndate: {results['date']}")
    print(
        "timings: "
        + ", ".join(f"{k.removeprefix('GRID_').lower()}={v}" for k, v in TIMINGS.items())
    )
    for scenario in ("node_crash", "agent_kill", "leader_kill"):
        for metric, s in results[scenario].items():
            print(f"{scenario:<12} {metric:<22} n={s['n']:<3} p50 {s['p50']:.3f}s  "
                  f"p90 {s['p90']:.3f}s  max {s['max']:.3f}s")  # fmt: skip
    for t in results["targets"]:
        verdict = "ok  " if t["met"] else "MISS"
        print(f"{verdict} {t['what']}: {t['value_s']:.3f}s (target <= {t['target_s']:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
