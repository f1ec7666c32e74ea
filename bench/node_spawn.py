"""How fast a grid-node answers: Popen → first /health 200, as an agent sees it.

Each round starts `grid-node --port 0` with a GRID_READY_FD pipe, reads the port from
the pipe, polls /health with `grid.health.wait_healthy` (what agents use), then stops the
node with SIGTERM. A baseline of `python -c pass` in the same run shows the floor.

    .venv/bin/python bench/node_spawn.py [--count 30] [--warmup 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grid.health import wait_healthy

READY_FD_ENV = "GRID_READY_FD"
TIMEOUT = 10.0


def node_command() -> list[str]:
    """The grid-node console script of this environment, else `python -m`."""
    exe = shutil.which("grid-node", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "grid.node.server"]


def read_port(fd: int, deadline: float) -> int:
    """The port line a node writes on its ready pipe."""
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 64) if ready else b""
        if not chunk:
            raise RuntimeError(f"no port on the ready pipe (got {data!r})")
        data += chunk
    return int(data)


def stop(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM the node; seconds until it exited (it must exit 0)."""
    start = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(TIMEOUT)
    if code != 0:
        raise RuntimeError(f"grid-node exited {code} on SIGTERM")
    return time.perf_counter() - start


def spawn_once(command: list[str], index: int) -> dict[str, float]:
    """One round; times in seconds from Popen."""
    data_dir = tempfile.mkdtemp(prefix="grid-bench-node-")
    read_fd, write_fd = os.pipe()
    proc: subprocess.Popen[bytes] | None = None
    try:
        env = {**os.environ, READY_FD_ENV: str(write_fd)}
        argv = [*command, "--port", "0", "--data-dir", data_dir, "--node-id", f"bench-{index}"]
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv, env=env, pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        os.close(write_fd)
        write_fd = -1
        port = read_port(read_fd, time.monotonic() + TIMEOUT)
        ready = time.perf_counter() - start
        running = proc
        if wait_healthy(f"http://127.0.0.1:{port}", TIMEOUT, alive=lambda: running.poll() is None):
            healthy = time.perf_counter() - start
        else:
            raise RuntimeError("grid-node never answered /health")
        return {"ready": ready, "healthy": healthy, "stop": stop(proc)}
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def python_pass_once() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [round(s * 1000, 2) for s in seconds]
    stats = {f"p{p}": percentile(ms, p) for p in (50, 90, 99)}
    return {**stats, "max": max(ms), "min": min(ms), "mean": round(sum(ms) / len(ms), 2)}


def repeat(func: Callable[[], Any], count: int, warmup: int) -> list[Any]:
    for _ in range(warmup):
        func()
    return [func() for _ in range(count)]


def run(count: int, warmup: int) -> dict[str, Any]:
    command = node_command()
    index = iter(range(10**9))
    rounds = repeat(lambda: spawn_once(command, next(index)), count, warmup)
    baseline = repeat(python_pass_once, count, warmup)
    return {
        "count": count,
        "command": command,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "spawn_to_health_ms": summary_ms([r["healthy"] for r in rounds]),
        "spawn_to_ready_fd_ms": summary_ms([r["ready"] for r in rounds]),
        "sigterm_to_exit_ms": summary_ms([r["stop"] for r in rounds]),
        "baseline_python_pass_ms": summary_ms(baseline),
    }


def print_human(result: dict[str, Any]) -> None:
    print(f"grid-node spawn, n={result['count']}, python {result['python']}, {result['cpus']} cpus")
    print(f"command: {' '.join(result['command'])}")
    rows = [
        ("Popen -> /health 200", "spawn_to_health_ms"),
        ("Popen -> port on ready fd", "spawn_to_ready_fd_ms"),
        ("SIGTERM -> exit 0", "sigterm_to_exit_ms"),
        ("baseline: python -c pass", "baseline_python_pass_ms"),
    ]
    print(f"{'':28} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}  (ms)")
    for label, key in rows:
        s = result[key]
        print(f"{label:28} {s['p50']:8.1f} {s['p90']:8.1f} {s['p99']:8.1f} {s['max']:8.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=30, help="spawns to measure")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured spawns first")
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
