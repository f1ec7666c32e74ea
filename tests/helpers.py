"""Shared test helpers: waiting on conditions with deadlines, service requirements, and the
fields the CLI's JSON output holds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from grid.node.prom import series_key
from grid.workers.agent.sampler import read_series

T = TypeVar("T")

# Every row of `grid nodes --json` (and `grid node-status --json`) holds at least these.
NODE_FIELDS = {
    "node_id",
    "agent_id",
    "pool",
    "status",
    "pid",
    "port",
    "endpoint",
    "restart_count",
    "generation",
    "created_at",
    "started_at",
    "error",
    "platform",
    "memory_mb",
}


def wait_for(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Return the first truthy value of `condition()`; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T = condition()
    while not last:
        if time.monotonic() >= deadline:
            pytest.fail(
                f"timed out after {timeout}s waiting for {what or condition!r} (last: {last!r})"
            )
        time.sleep(interval)
        last = condition()
    return last


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, reason: str) -> None:
    """Skip locally when a service is missing; under CI=true a missing service is a failure."""
    if available:
        return
    if in_ci():
        pytest.fail(f"required service missing under CI: {reason}")
    pytest.skip(reason)


def series_by_key(text: str) -> dict[str, float]:
    """The samples of an exposition, read as the agent reads them, keyed as tests write them:
    `name{a="x",b="y"}` with labels sorted (grid.node.prom.series_key)."""
    return {series_key(name, dict(labels)): v for (name, labels), v in read_series(text).items()}


def run_grid(
    args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The real `grid` script (this interpreter's package), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "grid.cli.main", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
