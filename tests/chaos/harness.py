"""Chaos harness: a LocalGrid with event reads, fault injection and the fleet invariants.

`assert_invariants(grid)` is the check every chaos scenario ends with:

- every pool runs exactly its desired number of nodes (all its records `running`);
- no node id runs twice (one top-level node process per node id);
- no node process that no record owns, and no running record without its process;
- no desired state was lost (Redis still holds the sizes the test asked for);
- the per-agent node indexes and the node catalogue agree with the node records.

Also used by `bench/chaos.py`, so nothing here may depend on pytest fixtures.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil
import redis

from grid.core import naming
from grid.core.events import Event
from grid.core.state import NodeRecord
from tests.gridproc import BackgroundSampler, LocalGrid
from tests.helpers import wait_for

T = TypeVar("T")

EVENTS_KEY = naming.events_key()


def quiet(fn: Callable[[], T]) -> Callable[[], T | None]:
    """A wait_for condition that reads as 'not yet' while Redis is unreachable."""

    def call() -> T | None:
        try:
            return fn()
        except (redis.RedisError, OSError):
            return None

    return call


class ChaosGrid(LocalGrid):
    """LocalGrid plus what chaos scenarios need; remembers the desired sizes it set."""

    def __init__(self, redis_url: str, home: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(redis_url, home, env)
        self.expected: dict[str, int] = {}

    # ---- bring-up -------------------------------------------------------------------

    def up(
        self,
        agents: Sequence[str] = ("agent-1", "agent-2"),
        masters: Sequence[str] = ("master",),
        max_nodes: int = 10,
        agent_env: dict[str, dict[str, str]] | None = None,
        timeout: float = 60,
    ) -> None:
        for name in masters:
            self.start_master(name)
        for agent_id in agents:
            self.start_agent(agent_id, max_nodes, env=(agent_env or {}).get(agent_id))
        self.wait_leader(timeout)
        self.wait_agents(*agents, timeout=timeout)

    def start_agent_argv(
        self, name: str, prefix: list[str], agent_id: str, max_nodes: int, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        """Start an agent behind a command prefix (e.g. `ip netns exec NS`)."""
        with (self.home / "logs" / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [
                    *prefix,
                    sys.executable,
                    "-m",
                    "grid.cli.main",
                    "agent",
                    "--id",
                    agent_id,
                    "--max-nodes",
                    str(max_nodes),
                ],  # fmt: skip
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def scale(self, size: int, pool: str = "default") -> None:
        """`grid scale --no-wait`; the size becomes part of the expected desired state."""
        result = self.cli("scale", "--nodes", str(size), "--pool", pool, "--no-wait")
        assert result.returncode == 0, result.stderr
        self.expected[pool] = size

    # ---- events ---------------------------------------------------------------------

    def mark(self) -> str:
        """Id of the newest event: read 'since' it to see only what happens next."""
        rows = self.events_client.xrevrange(EVENTS_KEY, count=1)
        return str(rows[0][0]) if rows else "0-0"

    def find_events(
        self, *types: str, since: str = "0-0", node_id: str | None = None,
        agent_id: str | None = None,
    ) -> list[Event]:  # fmt: skip
        rows = self.events_client.xrange(EVENTS_KEY, min=f"({since}" if since != "0-0" else "-")
        out = []
        for event_id, fields in rows:
            ev = Event.from_fields(event_id, fields)
            if types and ev.type not in types:
                continue
            if node_id is not None and ev.node_id != node_id:
                continue
            if agent_id is not None and ev.agent_id != agent_id:
                continue
            out.append(ev)
        return out

    def wait_event(
        self, type_: str, since: str = "0-0", timeout: float = 30, count: int = 1, **filters: Any
    ) -> list[Event]:
        def found() -> list[Event]:
            evs = self.find_events(type_, since=since, **filters)
            return evs if len(evs) >= count else []

        what = f"{count} {type_} event(s) {filters or ''}"
        return wait_for(quiet(found), timeout, interval=0.02, what=what) or []

    # ---- state ----------------------------------------------------------------------

    def leader_id(self) -> str | None:
        holder = self.client.get("grid:leader")
        return str(holder).split("|", 1)[0] if holder else None

    def node_procs(self) -> dict[str, list[psutil.Process]]:
        """Top-level node processes by node id (a wrapper's own child is not counted)."""
        procs = list(self.node_processes())
        pids = {p.pid for p in procs}
        out: dict[str, list[psutil.Process]] = {}
        for proc in procs:
            try:
                if proc.ppid() in pids:
                    continue
                cmd = proc.cmdline()
            except psutil.Error:
                continue
            node_id = cmd[cmd.index("--node-id") + 1] if "--node-id" in cmd else "?"
            out.setdefault(node_id, []).append(proc)
        return out

    def kill_node(self, rec: NodeRecord) -> float:
        """kill -9 the process of a node record (checked to be that node); wall time of the kill."""
        assert rec.pid, rec
        proc = psutil.Process(rec.pid)
        assert rec.node_id in proc.cmdline(), f"pid {rec.pid} is not node {rec.node_id}"
        at = time.time()
        os.kill(rec.pid, signal.SIGKILL)
        return at

    def wait_settled(self, timeout: float = 60) -> list[NodeRecord]:
        """Every expected pool at its size with all records running."""

        def settled() -> list[NodeRecord] | None:
            nodes = self.state.nodes()
            for pool, want in self.expected.items():
                mine = [n for n in nodes if n.pool == pool]
                if len(mine) != want or any(n.status != "running" for n in mine):
                    return None
            return nodes or [NodeRecord(node_id="none")]

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = quiet(settled)()
            if got:
                return [n for n in got if n.node_id != "none"]
            time.sleep(0.05)
        seen = quiet(
            lambda: [(n.node_id, n.agent_id, n.status, n.error[:80]) for n in self.state.nodes()]
        )()
        raise AssertionError(f"pools not at {self.expected} within {timeout}s; records: {seen}")


# ---- the invariants ---------------------------------------------------------------------


def state_violations(
    grid: ChaosGrid, desired: dict[str, int] | None = None
) -> tuple[list[str], list[NodeRecord]]:
    """The checks on what Redis holds (desired sizes, pools, indexes), and the records read."""
    desired = grid.expected if desired is None else desired
    problems: list[str] = []
    stored = grid.state.desired()
    for pool, want in desired.items():
        if stored.get(pool) != want:
            problems.append(f"desired state lost: pool {pool} is {stored.get(pool)}, set to {want}")
    nodes = grid.state.nodes()
    for pool, want in desired.items():
        mine = [n for n in nodes if n.pool == pool]
        running = [n for n in mine if n.status == "running"]
        if len(running) != want or len(mine) != want:
            statuses = sorted(n.status for n in mine)
            problems.append(f"pool {pool}: {len(running)} running of {want} desired ({statuses})")
    problems += [f"index: {problem}" for problem in grid.state.check_index()]
    return problems, nodes


def process_violations(grid: ChaosGrid, nodes: list[NodeRecord]) -> list[str]:
    """The checks on node processes: one per running record, none twice, none unowned."""
    problems: list[str] = []
    procs = grid.node_procs()
    for node_id, group in procs.items():
        if len(group) > 1:
            problems.append(
                f"node {node_id} runs {len(group)} times: pids {[p.pid for p in group]}"
            )
    owned = {n.pid for n in nodes if n.pid and n.status in ("running", "starting", "restarting")}
    live = {p.pid: node_id for node_id, group in procs.items() for p in group}
    for pid, node_id in sorted(live.items()):
        if pid not in owned:
            problems.append(f"node process {pid} ({node_id}) is owned by no record")
    for n in nodes:
        if n.status == "running" and n.pid not in live:
            problems.append(f"record {n.node_id} says running as pid {n.pid}, no such node process")
    return problems


def invariant_violations(grid: ChaosGrid, desired: dict[str, int] | None = None) -> list[str]:
    problems, nodes = state_violations(grid, desired)
    return problems + process_violations(grid, nodes)


Violations = Callable[[ChaosGrid, "dict[str, int] | None"], list[str]]


def assert_all_alive(grid: ChaosGrid) -> None:
    """Every grid process started by the test still runs (none died of the fault)."""
    dead = {name: p.returncode for name, p in grid.procs.items() if p.poll() is not None}
    assert not dead, f"exited: {dead}"


def assert_invariants(
    grid: ChaosGrid,
    desired: dict[str, int] | None = None,
    timeout: float = 30,
    violations: Violations = invariant_violations,
) -> None:
    """Wait (with a deadline) until the fleet invariants hold; fail listing what does not.
    `violations` is the set of checks (`sim_violations` for simulated nodes)."""
    deadline = time.monotonic() + timeout
    problems: list[str] = ["not checked"]
    while problems:
        try:
            problems = violations(grid, desired)
        except redis.RedisError as exc:
            problems = [f"redis: {exc}"]
        if not problems:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    listed = "\n  ".join(problems)
    raise AssertionError(f"fleet invariants violated after {timeout:.0f}s:\n  {listed}")


class FleetWatch(BackgroundSampler):
    """Samples node records in the background: the most and fewest nodes `running` per pool."""

    def __init__(self, url: str, interval: float = 0.05) -> None:
        super().__init__(url, interval)
        self.max_running: dict[str, int] = {}
        self.min_running: dict[str, int] = {}

    def sample(self) -> None:
        counts: dict[str, int] = {}
        for n in self.state.nodes():
            if n.status == "running":
                counts[n.pool] = counts.get(n.pool, 0) + 1
        for pool in set(counts) | set(self.min_running):
            count = counts.get(pool, 0)
            self.max_running[pool] = max(self.max_running.get(pool, 0), count)
            self.min_running[pool] = min(self.min_running.get(pool, count), count)
