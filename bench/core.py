"""Core benchmarks (issue 2): Celery baseline, dispatch, spawn-to-healthy, registration, scale.

One run starts its own embedded Redis (grid.core.redis_server), a master and two process agents
(max 50 nodes each) as real `grid` processes (tests/gridproc.py's LocalGrid, with the grid's
default settings), measures, and removes everything it started:

  a. baseline: a raw Celery round trip (apply_async().get()) of a trivial task to a solo
     worker on the same Redis;
  b. dispatch: `grid.ping_agent` sent to an agent's queue, from send_task to the task
     starting in the agent process (both clocks are this machine's time.time());
  c. spawn-to-healthy of one grid-node through ProcessPlatform.spawn + health.wait_healthy;
  d. agent registration: GridState.claim_agent_id + the AgentRuntime.register() steps
     (record lookup, register_agent, agent_registered event), in this process;
  e. `grid scale --nodes N` from 0 over the two agents until every node runs, and back to 0,
     wall time of the command (interpreter start-up included), `--reps` times.

    .venv/bin/python bench/core.py [--count 200] [--spawns 30] [--nodes 100] [--reps 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: bench.*, tests.*

from celery import Celery

from bench import common
from bench.common import machine, measure_adapter
from grid.core import naming
from grid.core.celery_app import configure
from grid.core.connection import redis_client
from grid.core.events import EventLog, EventType
from grid.core.redis_server import EmbeddedRedis
from grid.core.state import AgentRecord, GridState, owner_token
from grid.core.tasknames import TaskName
from grid.platforms import create_platform
from grid.platforms.base import NodeSpec
from grid.workers.agent.runtime import resolve_node_command
from tests.gridproc import LocalGrid, stop_process

ECHO_QUEUE = "bench.echo"
AGENTS = ("bench-1", "bench-2")
MAX_NODES = 50


# ---- statistics -----------------------------------------------------------------------------


DIGITS = 3  # decimals of every figure this bench reports


def summary(values: Sequence[float], scale: float = 1000.0) -> dict[str, float]:
    """`bench.common.summary` of seconds, in ms (scale 1000) or s (scale 1), to DIGITS."""
    return common.summary(values, scale, digits=DIGITS)


# ---- the Celery baseline ------------------------------------------------------------------------


def echo_app(url: str) -> Celery:
    """A bare Celery app on the grid's Redis with one trivial task (same delivery settings)."""
    app = Celery("bench-echo", broker=url, backend=url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_default_queue=ECHO_QUEUE,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="bench.echo")
    def echo(value: int) -> int:
        return value

    return app


def run_echo_worker(url: str) -> int:
    """Entry point of the baseline's worker process (`core.py --echo-worker URL`)."""
    os.environ.setdefault("C_FORCE_ROOT", "1")
    app = echo_app(url)
    worker = app.Worker(
        hostname="bench-echo@localhost",
        queues=[ECHO_QUEUE],
        pool_cls="solo",
        concurrency=1,
        loglevel="WARNING",
        without_mingle=True,
        without_gossip=True,
        without_heartbeat=True,
        quiet=True,
        no_color=True,
    )
    worker.start()
    return int(worker.exitcode or 0)


def bench_baseline(url: str, count: int, warmup: int, logs: Path) -> dict[str, Any]:
    app = echo_app(url)
    echo = app.tasks["bench.echo"]
    with (logs / "echo-worker.log").open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--echo-worker", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        echo.apply_async(args=(-1,)).get(timeout=60)  # the worker is up
        times = []
        for i in range(warmup + count):
            start = time.perf_counter()
            assert echo.apply_async(args=(i,)).get(timeout=10) == i
            if i >= warmup:
                times.append(time.perf_counter() - start)
        return {"round_trip": summary(times)}
    finally:
        stop_process(proc, timeout=20)
        app.close()


# ---- grid processes ---------------------------------------------------------------------------


def wait(grid: LocalGrid, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    """Poll `check`; fail at once, with its log, when one of the grid's processes exits."""
    deadline = time.monotonic() + timeout
    while not check():
        dead = [n for n, p in grid.procs.items() if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead} exited: {grid.log(dead[0])[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


# ---- b: dispatch -------------------------------------------------------------------------------


def bench_dispatch(url: str, agent_id: str, count: int, warmup: int) -> dict[str, Any]:
    app = configure(url)
    queue = naming.agent_queue(agent_id)

    def ping(timeout: float) -> tuple[float, float]:
        start = time.perf_counter()
        result = app.send_task(
            TaskName.PING_AGENT, args=[time.time()], queue=queue, ignore_result=False
        )
        try:
            out = result.get(timeout=timeout)
        finally:
            result.forget()
        return out["ran_at"] - out["sent_at"], time.perf_counter() - start

    ping(60)  # the agent's worker is consuming
    samples = [ping(10) for _ in range(warmup + count)][warmup:]
    return {
        "send_to_start": summary([max(0.0, s[0]) for s in samples]),
        "round_trip": summary([s[1] for s in samples]),
    }


# ---- c: spawn-to-healthy -------------------------------------------------------------------------


def bench_spawn(root: Path, count: int, warmup: int) -> dict[str, Any]:
    plat = create_platform("process", "bench-local", {"root": str(root)})
    command = resolve_node_command("grid-node")

    def make_spec(i: int) -> NodeSpec:
        return NodeSpec(node_id=f"bench-{i}", agent_id="bench-local", pool="bench", command=command)

    try:
        # spawn() of the process adapter returns once the node wrote its port on the ready fd
        timed = measure_adapter(
            plat, make_spec, count, warmup, health_timeout=15.0, grace=5.0, digits=DIGITS
        )
    finally:
        plat.close()
    return {
        "command": command,
        "spawn_to_healthy": timed["spawn_to_healthy_ms"],
        "spawn_to_port": timed["spawn_call_ms"],
        "stop": timed["stop_call_ms"],
    }


# ---- d: registration --------------------------------------------------------------------------


def bench_registration(url: str, count: int) -> dict[str, Any]:
    client = redis_client(url)
    state = GridState(client)
    events = EventLog(client)
    token = owner_token()
    times = []
    ids = [f"bench-reg-{i}" for i in range(count)]
    try:
        for agent_id in ids:
            start = time.perf_counter()
            state.claim_agent_id(agent_id, token, ttl=30.0)
            existing = state.agent(agent_id)  # AgentRuntime.register(): keep an operator's drain
            now = time.time()
            record = AgentRecord(
                agent_id=agent_id,
                hostname="bench",
                max_nodes=10,
                registered_at=now,
                last_heartbeat=now,
                pid=os.getpid(),
                draining=bool(existing and existing.draining),
            )
            state.register_agent(record)
            events.emit(
                EventType.AGENT_REGISTERED,
                f"agent {agent_id} registered",
                agent_id=agent_id,
                platform="process",
                max_nodes=10,
            )
            times.append(time.perf_counter() - start)
    finally:
        for agent_id in ids:
            state.unregister_agent(agent_id, token)
        client.close()
    return {"claim_and_register": summary(times)}


# ---- e: scale ----------------------------------------------------------------------------------

_ELAPSED = re.compile(r"nodes running \(([\d.]+)s\)")


def scale(grid: LocalGrid, size: int) -> dict[str, float]:
    start = time.perf_counter()
    result = grid.cli("scale", "--nodes", str(size), "--timeout", "300s", timeout=300)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"grid scale --nodes {size} failed: {result.stderr[-2000:]}")
    match = _ELAPSED.search(result.stdout)
    return {"wall": wall, "reported": float(match.group(1)) if match else float("nan")}


def bench_scale(grid: LocalGrid, nodes: int, reps: int) -> dict[str, Any]:
    ups, downs = [], []
    spawn_ms: list[float] = []
    for _ in range(reps):
        mark = grid.client.xrevrange(naming.events_key(), count=1)
        after = mark[0][0] if mark else "0-0"
        up = scale(grid, nodes)
        running = [n for n in grid.state.nodes() if n.status == "running"]
        if len(running) != nodes:
            raise RuntimeError(f"{len(running)} of {nodes} running after scale-up")
        per_agent = {a: sum(1 for n in running if n.agent_id == a) for a in AGENTS}
        ups.append(up)
        for _, fields in grid.client.xrange(naming.events_key(), min=f"({after}"):
            if fields.get("type") == "spawn_succeeded":
                spawn_ms.append(json.loads(fields["data"]).get("duration_ms", 0.0) / 1000)
        down = scale(grid, 0)
        if grid.state.nodes() or any(True for _ in grid.node_processes()):
            raise RuntimeError("nodes left after scaling to 0")
        downs.append(down)
    return {
        "nodes": nodes,
        "per_agent_last": per_agent,
        "up_wall": summary([u["wall"] for u in ups], scale=1),
        "up_reported": summary([u["reported"] for u in ups], scale=1),
        "down_wall": summary([d["wall"] for d in downs], scale=1),
        "down_reported": summary([d["reported"] for d in downs], scale=1),
        "up_runs_s": [round(u["wall"], 3) for u in ups],
        "down_runs_s": [round(d["wall"], 3) for d in downs],
        "agent_spawn_to_running_under_load": summary(spawn_ms),
    }


# ---- the run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": machine()}
    tmp = Path(tempfile.mkdtemp(prefix="grid-bench-core-"))
    server = EmbeddedRedis(data_dir=tmp / "redis")
    grid: LocalGrid | None = None
    try:
        url = server.start()
        result["redis"] = {"url": url, "appendonly": server.appendonly}
        logs = tmp / "home" / "logs"
        logs.mkdir(parents=True)
        grid = LocalGrid(url, tmp / "home", timings=None)  # the grid's default settings
        grid.start_master()
        for agent_id in AGENTS:
            grid.start_agent(agent_id, MAX_NODES)
        progress("baseline: Celery round trip")
        result["baseline"] = bench_baseline(url, args.count, args.warmup, logs)
        progress("grid up")
        wait(grid, "leader", lambda: bool(grid.client.get(naming.leader_key())))
        wait(grid, "agents", lambda: len(grid.state.agents()) == len(AGENTS))
        result["agent_printed_registration_ms"] = [
            float(m.group(1))
            for a in AGENTS
            if (m := re.search(r"registered in ([\d.]+) ms", grid.log(a)))
        ]
        progress("dispatch: grid.ping_agent")
        result["dispatch"] = bench_dispatch(url, AGENTS[0], args.count, args.warmup)
        progress("spawn-to-healthy: ProcessPlatform")
        result["spawn"] = bench_spawn(tmp / "local-nodes", args.spawns, args.warmup)
        progress("registration")
        result["registration"] = bench_registration(url, args.count)
        if args.reps:
            progress(f"scale 0 -> {args.nodes} -> 0, {args.reps} times")
            result["scale"] = bench_scale(grid, args.nodes, args.reps)
    finally:
        leaked = grid.close() if grid is not None else []
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    result["leaked_node_processes"] = leaked
    result["verdict"] = targets(result)
    return result


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    checks: dict[str, tuple[float | None, float]] = {
        "dispatch p50 <= 3 ms": (result["dispatch"]["send_to_start"]["p50"], 3.0),
        "spawn-to-healthy p50 <= 150 ms": (result["spawn"]["spawn_to_healthy"]["p50"], 150.0),
        "registration p50 <= 5 ms": (result["registration"]["claim_and_register"]["p50"], 5.0),
    }
    if "scale" in result:
        checks["0->N wall p50 <= 10 s"] = (result["scale"]["up_wall"]["p50"], 10.0)
        checks["N->0 wall p50 <= 5 s"] = (result["scale"]["down_wall"]["p50"], 5.0)
    return common.verdict(checks)


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def print_human(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"machine: {m['nproc']} x {m['cpu_model']}, {m['memory_gib']} GiB, python {m['python']}")
    print(f"date: {m['date']}, load average at start {m['loadavg_at_start']}")
    print(f"command: {m['command']}")
    rows: list[tuple[str, dict[str, float], str]] = [
        ("a. Celery round trip (baseline)", r["baseline"]["round_trip"], "ms"),
        ("b. dispatch: send_task -> agent task", r["dispatch"]["send_to_start"], "ms"),
        ("   ping_agent round trip", r["dispatch"]["round_trip"], "ms"),
        ("c. spawn -> /health 200", r["spawn"]["spawn_to_healthy"], "ms"),
        ("   spawn -> port on ready fd", r["spawn"]["spawn_to_port"], "ms"),
        ("d. claim + register + event", r["registration"]["claim_and_register"], "ms"),
    ]
    if "scale" in r:
        s = r["scale"]
        n = s["nodes"]
        rows += [
            (f"e. grid scale 0 -> {n} (wall)", s["up_wall"], "s"),
            (f"   0 -> {n} (command's own timer)", s["up_reported"], "s"),
            (f"   grid scale {n} -> 0 (wall)", s["down_wall"], "s"),
            (f"   {n} -> 0 (command's own timer)", s["down_reported"], "s"),
            (
                "   agent spawn -> running, under load",
                s["agent_spawn_to_running_under_load"],
                "ms",
            ),
        ]
    print(f"{'':40} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9} {'n':>5}")
    for label, s, unit in rows:
        print(
            f"{label:40} {s['p50']:9.2f} {s['p90']:9.2f} {s['p99']:9.2f} {s['max']:9.2f} "
            f"{s['n']:5d} {unit}"
        )
    print(f"agents printed 'registered in': {r['agent_printed_registration_ms']} ms")
    if "scale" in r:
        s = r["scale"]
        print(
            f"scale runs (wall, s): up {s['up_runs_s']}, down {s['down_runs_s']}; "
            f"nodes per agent at the last scale-up: {s['per_agent_last']}"
        )
    for name, v in r["verdict"].items():
        print(f"{'met ' if v['met'] else 'MISSED'} {name}: {v['value']}")
    if r["leaked_node_processes"]:
        print(f"LEAKED node processes (killed): {r['leaked_node_processes']}")


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--echo-worker":
        return run_echo_worker(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200, help="samples for a, b and d")
    parser.add_argument("--spawns", type=int, default=30, help="samples for c")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured samples first")
    parser.add_argument("--nodes", type=int, default=100, help="pool size for e")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of e (0 skips it)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.count < 1 or args.spawns < 1 or args.warmup < 0 or args.reps < 0:
        parser.error("--count and --spawns must be >= 1, --warmup and --reps >= 0")
    if not 0 < args.nodes <= MAX_NODES * len(AGENTS):
        parser.error(f"--nodes must be 1..{MAX_NODES * len(AGENTS)}")
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_human(result)
    return 1 if result["leaked_node_processes"] else 0


if __name__ == "__main__":
    sys.exit(main())
