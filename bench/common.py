"""What the benchmarks share: percentiles, the machine they ran on, and the adapter timing loop.

`measure_adapter` is the one loop that times a platform adapter as an agent drives it:
`spawn()` returning, spawn → first /health 200 (`grid.workers.agent.health.wait_healthy`,
the agent's own probe) and `stop()`, each summarised by
`summary` (nearest-rank p50/p90/p99, max, in ms).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from grid.platforms.base import NodeHandle, NodeSpec
from grid.workers.agent.health import wait_healthy

T = TypeVar("T")

HEALTH_TIMEOUT = 60.0  # seconds from spawn() returning to the first /health 200
STOP_GRACE = 5.0  # the agent's default stop_grace (grid/core/settings.py)


# ---- statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (with n < 100 samples, p99 is the maximum)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def summary(seconds: Sequence[float], scale: float = 1000.0, digits: int = 2) -> dict[str, float]:
    """p50/p90/p99/max/min/mean and n of durations in seconds, in ms (scale 1000) or s (1),
    rounded to `digits` decimals."""
    xs = [s * scale for s in seconds]
    stats = {f"p{p}": round(percentile(xs, p), digits) for p in (50, 90, 99)}
    return {
        **stats,
        "max": round(max(xs), digits),
        "min": round(min(xs), digits),
        "mean": round(sum(xs) / len(xs), digits),
        "n": len(xs),
    }


def repeat(func: Callable[[], T], count: int, warmup: int) -> list[T]:
    """`warmup` unmeasured calls, then the results of `count` calls."""
    for _ in range(warmup):
        func()
    return [func() for _ in range(count)]


def timed(func: Callable[[], object]) -> float:
    """Seconds one call of `func` takes."""
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def verdict(checks: Mapping[str, tuple[float | None, float]]) -> dict[str, dict[str, Any]]:
    """{name: {value, target, met}} for `value <= target` checks; a None value is not measured.

    Every bench prints this under the key "verdict" of its --json output (bench/run_all.py
    reads it); `met` is None when the value could not be measured.
    """
    return {
        name: {"value": value, "target": target, "met": None if value is None else value <= target}
        for name, (value, target) in checks.items()
    }


# ---- where it ran -----------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU count and model, memory, load average, Python, date and the command line."""
    model = ""
    memory_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kib / 2**20, 1),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join([".venv/bin/python", *sys.argv]),
    }


# ---- the adapter loop -------------------------------------------------------------------


class Spawner(Protocol):
    """The part of `grid.platforms.base.Platform` the loop uses (every adapter has it)."""

    def spawn(self, spec: NodeSpec) -> NodeHandle: ...

    def stop(self, node_id: str, grace: float) -> None: ...

    def logs(self, node_id: str, lines: int = 100) -> str: ...


def measure_adapter(
    platform: Spawner,
    make_spec: Callable[[int], NodeSpec],
    count: int,
    warmup: int,
    *,
    health_timeout: float = HEALTH_TIMEOUT,
    grace: float = STOP_GRACE,
    digits: int = 2,
) -> dict[str, Any]:
    """Spawn, wait healthy and stop `warmup + count` nodes in turn; summarise the last `count`.

    `make_spec(i)` gives the spec of round i (a fresh node id each). Returns the summaries
    (ms) `spawn_call_ms` (spawn() returns), `spawn_to_healthy_ms` (spawn() called → first
    /health 200) and `stop_call_ms` (stop(grace) returns), rounded to `digits` decimals. A
    round that fails raises, after removing its node.
    """

    def one(index: int) -> tuple[float, float, float]:
        spec = make_spec(index)
        finished = False
        try:
            start = time.perf_counter()
            handle = platform.spawn(spec)
            spawned = time.perf_counter()
            if wait_healthy(handle.endpoint, health_timeout) is None:
                tail = platform.logs(spec.node_id, lines=5).strip().replace("\n", " | ")
                raise RuntimeError(
                    f"{spec.node_id} never answered /health on {handle.endpoint} "
                    f"within {health_timeout:g}s; log: {tail}"
                )
            healthy = time.perf_counter()
            platform.stop(spec.node_id, grace)
            stopped = time.perf_counter()
            finished = True
        finally:
            if not finished:
                with contextlib.suppress(Exception):  # keep the first error
                    platform.stop(spec.node_id, 0)
        return spawned - start, healthy - start, stopped - healthy

    rounds = [one(i) for i in range(warmup + count)][warmup:]
    return {
        "count": count,
        "warmup": warmup,
        "spawn_call_ms": summary([r[0] for r in rounds], digits=digits),
        "spawn_to_healthy_ms": summary([r[1] for r in rounds], digits=digits),
        "stop_call_ms": summary([r[2] for r in rounds], digits=digits),
    }
