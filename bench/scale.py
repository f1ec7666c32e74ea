"""Scale benchmarks (issue 9): growth curves of the per-agent and per-pass costs, with simulated
agents (`grid sim`'s engine) on a real Redis and, end to end, a real master process.

One run starts its own embedded Redis (no append-only file: these are CPU figures, not
durability ones) and removes everything it started. Sections (`--only a,b`):

  baseline      Redis PING round trip through the grid's client, and one bare Celery
                `send_task` (no result), the floor of every figure below;
  heartbeat     one agent's `AgentRuntime.heartbeat()` (10 nodes of its own) with 1k / 10k /
                50k node records in the grid: latency, Redis commands (INFO commandstats
                deltas) and bytes (INFO stats deltas) per beat;
  health        the master's `health_tick()` (and its `check_agents` part) at 100 agents / 1k nodes,
                1,000 / 10k, 5,000 / 10k and 5,000 / 50k, all agents fresh; plus a reconcile
                with nothing to do at the same sizes;
  dispatch      a reconcile that places 1k / 5k / 10k new nodes (10 per agent): the whole
                pass, the sends alone, Redis commands;
  registration  `AgentRuntime.start(background=False)` of 100 / 1,000 / 5,000 agents in turn;
  scale         end to end, real master process, simulated agents in this process: 0 -> 1k
                / 5k / 10k nodes on 100 / 500 / 1,000 agents (capacity 10);
  offline       1,000 agents (capacity 12) running 10,000 nodes; 1, 20 then 100 agents go
                silent at once: from the first `agent_offline` to the last replacement running;
  soak          5,000 agents x 50,000 nodes at the default intervals for --soak-seconds:
                CPU and memory of Redis (and its main thread), the master and this process
                (the simulator), and every agent marked degraded or offline.

    .venv/bin/python bench/scale.py [--only heartbeat,health] [--soak-seconds 600] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: bench.*, tests.*

import psutil

from bench.common import machine, summary, timed, verdict
from grid.core import naming
from grid.core.celery_app import app, configure
from grid.core.connection import Clients, redis_client
from grid.core.events import EventType
from grid.core.redis_server import EmbeddedRedis
from grid.core.rtypes import Redis
from grid.core.settings import Settings, load_settings
from grid.core.state import AgentRecord, GridState, NodeRecord, NodeStatus
from grid.core.tasknames import TaskName
from grid.workers.agent.runtime import AgentOptions, AgentRuntime
from grid.workers.agent.sim.engine import SimOptions, Simulator, check_descriptors, sim_clients
from grid.workers.master.monitor import check_agents
from grid.workers.master.runtime import CeleryDispatcher, MasterRuntime
from tests.gridproc import LocalGrid

POOL = naming.DEFAULT_POOL
SECTIONS = (
    "baseline",
    "heartbeat",
    "health",
    "dispatch",
    "registration",
    "scale",
    "offline",
    "soak",
)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---- Redis accounting ---------------------------------------------------------------------


def command_calls(client: Redis) -> dict[str, int]:
    stats: Mapping[str, Any] = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def net_bytes(client: Redis) -> tuple[int, int]:
    stats: Mapping[str, Any] = client.info("stats")
    return int(stats["total_net_input_bytes"]), int(stats["total_net_output_bytes"])


@contextmanager
def redis_cost(client: Redis, out: dict[str, Any]) -> Iterator[None]:
    """Commands by name and bytes in/out of Redis while the block runs (INFO calls excluded:
    the bytes of the one INFO reply inside the window are subtracted)."""
    calls = command_calls(client)
    probe_in, probe_out = net_bytes(client)  # what one INFO stats costs, measured
    probe_in2, probe_out2 = net_bytes(client)
    yield
    after_calls, (after_in, after_out) = command_calls(client), net_bytes(client)
    commands = {
        k: after_calls.get(k, 0) - calls.get(k, 0)
        for k in after_calls
        if k != "info" and after_calls.get(k, 0) != calls.get(k, 0)
    }
    out["commands"] = commands
    out["commands_total"] = sum(commands.values())
    out["bytes_in"] = after_in - probe_in2 - (probe_in2 - probe_in)
    out["bytes_out"] = after_out - probe_out2 - (probe_out2 - probe_out)


# ---- populating a grid --------------------------------------------------------------------


def agent_ids(count: int, prefix: str = "bench") -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(1, count + 1)]


def populate(state: GridState, agents: int, nodes: int, max_nodes: int = 0) -> list[str]:
    """`agents` registered agents (fresh heartbeats) and `nodes` running records spread
    over them, written as the grid's own code writes them."""
    ids = agent_ids(agents)
    now = time.time()
    per_agent = max_nodes or max(1, -(-nodes // agents))
    pipe = state.pipeline()
    for agent_id in ids:
        rec = AgentRecord(
            agent_id=agent_id,
            platform="sim",
            max_nodes=per_agent,
            registered_at=now,
            last_heartbeat=now,
        )
        pipe.hset(naming.agent_key(agent_id), mapping=rec.to_hash())
        pipe.sadd(naming.agents_key(), agent_id)
        pipe.zadd(naming.heartbeats_key(), {agent_id: now})
    pipe.execute()
    batch: list[NodeRecord] = []
    for i in range(nodes):
        agent_id = ids[i % agents]
        batch.append(
            NodeRecord(
                node_id=f"{POOL}-{i:08x}",
                pool=POOL,
                agent_id=agent_id,
                status=NodeStatus.RUNNING,
                generation=i + 1,
                created_at=now,
                started_at=now,
                port=30000,
                endpoint="http://127.0.0.1:30000",
            )
        )
        if len(batch) == 2000:
            state.create_nodes(batch)
            batch = []
    state.create_nodes(batch)
    return ids


def refresh_heartbeats(state: GridState, ids: Sequence[str]) -> None:
    now = time.time()
    state.r.zadd(naming.heartbeats_key(), dict.fromkeys(ids, now))


# ---- sections -----------------------------------------------------------------------------


def bench_baseline(client: Redis, url: str, count: int) -> dict[str, Any]:
    pings = [timed(client.ping) for _ in range(count)]
    configure(url)
    with app.producer_or_acquire() as producer:
        sends = [
            timed(
                lambda: app.send_task(
                    "bench.nothing",
                    args=[[]],
                    queue="bench.baseline",
                    producer=producer,
                    ignore_result=True,
                )
            )
            for _ in range(count)
        ]
    client.delete("bench.baseline")
    return {"ping_ms": summary(pings), "celery_send_ms": summary(sends)}


def bench_heartbeat(
    client: Redis, settings: Settings, sizes: Sequence[int], beats: int
) -> list[dict[str, Any]]:
    rows = []
    state = GridState(client)
    for size in sizes:
        client.flushall()
        populate(state, max(1, size // 10), size)
        runtime = AgentRuntime(
            settings,
            Clients(client, client),
            AgentOptions(agent_id="beat-agent", platform="sim", max_nodes=10),
        )
        runtime.start(background=False)
        now = time.time()
        state.create_nodes(
            [
                NodeRecord(
                    node_id=f"own-{i}",
                    agent_id="beat-agent",
                    pool=POOL,
                    status=NodeStatus.RUNNING,
                    generation=10**9 + i,
                    created_at=now,
                )
                for i in range(10)
            ]
        )
        for _ in range(20):
            runtime.heartbeat()  # warm up
        cost: dict[str, Any] = {}
        with redis_cost(client, cost):
            lat = [timed(runtime.heartbeat) for _ in range(beats)]
        row = {
            "node_records": client.hlen(naming.node_agents_key()),
            "latency_ms": summary(lat),
            "commands_per_beat": round(cost["commands_total"] / beats, 2),
            "commands": {k: round(v / beats, 2) for k, v in cost["commands"].items()},
            "bytes_in_per_beat": round(cost["bytes_in"] / beats),
            "bytes_out_per_beat": round(cost["bytes_out"] / beats),
        }
        runtime.shutdown(stop_nodes=False)
        say(
            f"heartbeat at {size} records: {row['latency_ms']['p50']} ms p50, "
            f"{row['commands_per_beat']} commands, {row['bytes_out_per_beat']} B read"
        )
        rows.append(row)
    return rows


def leading_master(settings: Settings, client: Redis) -> MasterRuntime:
    runtime = MasterRuntime(settings, Clients(client, client), "bench-master")
    assert runtime.state.acquire_lease(naming.leader_key(), runtime.token, ttl=3600)
    runtime.is_leader = True
    return runtime


def bench_health(
    client: Redis, settings: Settings, sizes: Sequence[tuple[int, int]], reps: int
) -> list[dict[str, Any]]:
    rows = []
    for agents, nodes in sizes:
        client.flushall()
        row = health_at(client, settings, agents, nodes, reps)
        say(
            f"health at {agents}/{nodes}: tick {row['health_tick_ms']['p50']} ms "
            f"(check_agents {row['check_agents_ms']['p50']}), "
            f"{row['health_tick_commands']} commands; "
            f"no-op reconcile {row['reconcile_noop_ms']['p50']} ms"
        )
        rows.append(row)
    return rows


def health_at(
    client: Redis, settings: Settings, agents: int, nodes: int, reps: int
) -> dict[str, Any]:
    state = GridState(client)
    ids = populate(state, agents, nodes)
    state.set_desired(POOL, nodes)
    master = leading_master(settings, client)
    events = master.events

    def fresh(fn: Callable[[], object]) -> float:
        """One timed call, every agent's heartbeat fresh (so no agent turns degraded)."""
        refresh_heartbeats(state, ids)
        return timed(fn)

    fresh(master.health_tick)  # warm up (the first cluster-state transition)
    ticks = [fresh(master.health_tick) for _ in range(reps)]
    checks = [
        fresh(lambda: check_agents(state, events, settings, time.time())) for _ in range(reps)
    ]
    cost: dict[str, Any] = {}
    refresh_heartbeats(state, ids)
    with redis_cost(client, cost):
        master.health_tick()
    master.reconcile("warm up")
    reconciles = [timed(lambda: master.reconcile("bench")) for _ in range(max(3, reps // 2))]
    master.state.release_lease(naming.leader_key(), master.token)
    return {
        "agents": agents,
        "nodes": nodes,
        "health_tick_ms": summary(ticks),
        "check_agents_ms": summary(checks),
        "health_tick_commands": cost["commands_total"],
        "reconcile_noop_ms": summary(reconciles),
    }


class TimedDispatcher(CeleryDispatcher):
    """The master's dispatcher, timing its sends."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.messages = 0

    def dispatch(
        self, spawns: Mapping[str, Sequence[str]], stops: Mapping[str, Sequence[str]]
    ) -> None:
        send = super().dispatch
        self.seconds += timed(lambda: send(spawns, stops))
        self.messages += sum(1 for ids in (*spawns.values(), *stops.values()) if ids)


def bench_dispatch(
    client: Redis, url: str, settings: Settings, sizes: Sequence[int]
) -> list[dict[str, Any]]:
    configure(url)
    rows = []
    for size in sizes:
        client.flushall()
        row = dispatch_of(client, settings, size)
        say(
            f"dispatch of {size}: reconcile {row['reconcile_s']} s, sends {row['sends_s']} s "
            f"({row['messages']} messages), {row['commands_per_spawn']} commands/spawn"
        )
        rows.append(row)
    return rows


def dispatch_of(client: Redis, settings: Settings, size: int) -> dict[str, Any]:
    state = GridState(client)
    ids = populate(state, size // 10, 0, max_nodes=10)
    state.set_desired(POOL, size)
    master = leading_master(settings, client)
    dispatcher = TimedDispatcher()
    master.dispatcher = dispatcher
    cost: dict[str, Any] = {}
    with redis_cost(client, cost):
        seconds = timed(lambda: master.reconcile("bench"))
    master.state.release_lease(naming.leader_key(), master.token)
    return {
        "spawns": size,
        "agents": len(ids),
        "reconcile_s": round(seconds, 3),
        "sends_s": round(dispatcher.seconds, 3),
        "messages": dispatcher.messages,
        "queued": sum(int(client.llen(naming.agent_queue(a))) for a in ids),
        "commands_total": cost["commands_total"],
        "commands_per_spawn": round(cost["commands_total"] / size, 2),
        "commands": cost["commands"],
    }


def bench_registration(
    client: Redis, settings: Settings, sizes: Sequence[int]
) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        client.flushall()
        starts, registers = [], []
        for agent_id in agent_ids(size, "reg"):
            runtime = AgentRuntime(
                settings, Clients(client, client), AgentOptions(agent_id=agent_id, platform="sim")
            )
            starts.append(timed(functools.partial(runtime.start, background=False)))
            registers.append(runtime.registration_ms / 1000)
            runtime.platform.close()
        row: dict[str, Any] = {
            "agents": size,
            "start_ms": summary(starts),
            "register_ms": summary(registers),
        }
        say(
            f"registration of {size}: start p50 {row['start_ms']['p50']} ms, register() p50 "
            f"{row['register_ms']['p50']} ms"
        )
        rows.append(row)
    return rows


# ---- end to end: a master process and simulated agents ------------------------------------


class EventCounter:
    """Reads the event stream forward from a mark: counts and times of chosen types."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        rows = client.xrevrange(naming.events_key(), count=1)
        self.last = str(rows[0][0]) if rows else "0-0"
        self.seen: dict[str, list[tuple[float, str]]] = {}

    def poll(self) -> None:
        while True:
            reply = self.client.xread({naming.events_key(): self.last}, count=5000)
            if not reply:
                return
            for event_id, fields in reply[0][1]:
                self.last = event_id
                kind = fields.get("type", "")
                self.seen.setdefault(kind, []).append(
                    (float(fields.get("ts", 0)), fields.get("agent_id", ""))
                )

    def of(self, kind: EventType) -> list[tuple[float, str]]:
        return self.seen.get(kind.value, [])


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@contextmanager
def master_grid(url: str, home: Path) -> Iterator[LocalGrid]:
    grid = LocalGrid(url, home, timings=None, env={"GRID_HTTP_PORT": "-1"})
    try:
        grid.start_master()
        grid.wait_leader(60)
        yield grid
    finally:
        grid.close()


def simulator(
    client: Redis, url: str, settings: Settings, agents: int, capacity: int, shared: bool = False
) -> Simulator:
    if not shared:
        check_descriptors(agents * capacity)
    sim = Simulator(
        settings,
        sim_clients(url, url),
        url,
        SimOptions(
            agents=agents,
            nodes_per_agent=capacity,
            chaos_after=None,
            shared_endpoint=shared,
            seed=1,
        ),
        say=say,
    )
    sim.start()
    return sim


def scale_to(client: Redis, size: int, timeout: float, start: int = 0) -> dict[str, float]:
    """`grid scale --nodes size` (desired + reconcile task) from `start` nodes running, until
    the new ones' spawns succeeded."""
    counter = EventCounter(client)
    started = time.time()
    GridState(client).set_desired(POOL, size)
    app.send_task(TaskName.RECONCILE, args=["bench"], queue=naming.MASTER_QUEUE, ignore_result=True)
    new = size - start

    def done() -> bool:
        counter.poll()
        return len(counter.of(EventType.SPAWN_SUCCEEDED)) >= new

    wait_until(done, timeout, f"{size} nodes running", every=0.2)
    times = sorted(ts for ts, _ in counter.of(EventType.SPAWN_SUCCEEDED))
    return {
        "seconds": round(times[new - 1] - started, 3),
        "first_running_s": round(times[0] - started, 3),
    }


def running_count(state: GridState) -> int:
    return sum(1 for n in state.nodes() if n.status == NodeStatus.RUNNING)


def bench_scale(
    client: Redis, url: str, settings: Settings, tmp: Path, sizes: Sequence[tuple[int, int]]
) -> list[dict[str, Any]]:
    configure(url)
    rows = []
    for agents, size in sizes:
        client.flushall()
        with master_grid(url, tmp / f"scale-{size}") as _:
            sim = simulator(client, url, settings, agents, 10)
            try:
                got = scale_to(client, size, timeout=600)
                state = GridState(client)
                row = {
                    "agents": agents,
                    "nodes": size,
                    **got,
                    "running": running_count(state),
                    "index_problems": len(state.check_index()),
                }
            finally:
                sim.stop()
        say(
            f"scale 0 -> {size} on {agents} agents: {row['seconds']} s "
            f"(first running after {row['first_running_s']} s)"
        )
        rows.append(row)
    return rows


def bench_offline(
    client: Redis, url: str, settings: Settings, tmp: Path, ks: Sequence[int]
) -> dict[str, Any]:
    configure(url)
    client.flushall()
    agents, capacity, size = 1000, 12, 10_000
    out: dict[str, Any] = {"agents": agents, "capacity": capacity, "nodes": size, "runs": []}
    with master_grid(url, tmp / "offline") as _:
        sim = simulator(client, url, settings, agents, capacity)
        try:
            out["scale_up"] = scale_to(client, size, timeout=300)
            state = GridState(client)
            for k in ks:
                run = offline_run(client, sim, k, size)
                say(
                    f"{k} agents offline: {run['nodes_moved']} nodes replaced and running "
                    f"{run['offline_to_replaced_s']} s after the first was marked offline"
                )
                out["runs"].append(run)
            out["index_problems"] = len(state.check_index())
        finally:
            sim.stop()
    return out


def offline_run(client: Redis, sim: Simulator, k: int, size: int) -> dict[str, Any]:
    """`k` agents holding nodes go silent at once; until their nodes run elsewhere."""
    state = GridState(client)
    counter = EventCounter(client)
    ids = sim.pick_silent(k)
    silenced_at = time.time()
    sim.silence(ids)

    def lost_and_replaced() -> bool:
        counter.poll()
        off = {a for _, a in counter.of(EventType.AGENT_OFFLINE)} & set(ids)
        lost = [a for _, a in counter.of(EventType.NODE_LOST) if a in ids]
        spawned = counter.of(EventType.SPAWN_SUCCEEDED)
        return len(off) == k and bool(lost) and len(spawned) >= len(lost)

    wait_until(lost_and_replaced, 120, f"{k} agents replaced", every=0.2)
    offline = sorted(ts for ts, a in counter.of(EventType.AGENT_OFFLINE) if a in ids)
    lost = [a for _, a in counter.of(EventType.NODE_LOST) if a in ids]
    spawned = sorted(ts for ts, _ in counter.of(EventType.SPAWN_SUCCEEDED))
    done_at = spawned[len(lost) - 1]
    wait_until(lambda: running_count(state) == size, 60, "the pool at size")
    return {
        "k": k,
        "nodes_moved": len(lost),
        "silence_to_offline_s": round(offline[0] - silenced_at, 3),
        "offline_spread_s": round(offline[-1] - offline[0], 3),
        "offline_to_replaced_s": round(done_at - offline[0], 3),
        "last_offline_to_replaced_s": round(done_at - offline[-1], 3),
    }


def bench_soak(
    client: Redis,
    url: str,
    settings: Settings,
    tmp: Path,
    server: EmbeddedRedis,
    agents: int,
    size: int,
    seconds: float,
    step: int,
    shared: bool,
) -> dict[str, Any]:
    configure(url)
    client.flushall()
    out: dict[str, Any] = {"agents": agents, "nodes": size, "seconds": seconds, "shared": shared}
    capacity = max(10, -(-size // agents))
    with master_grid(url, tmp / "soak") as grid:
        sim = simulator(client, url, settings, agents, capacity, shared=shared)
        try:
            # in steps: a burst of 50,000 starts in one process starves its probes
            steps = list(range(min(step, size), size, step)) + [size]
            ramp = [
                scale_to(client, n, 600, start=p) for p, n in zip([0, *steps], steps, strict=False)
            ]
            out["scale_up"] = {"steps": steps, "seconds": sum(r["seconds"] for r in ramp)}
            say(f"soak: {size} nodes up after {out['scale_up']['seconds']} s; soaking {seconds} s")
            assert server.process is not None
            procs = {
                "redis": psutil.Process(server.process.pid),
                "master": psutil.Process(grid.procs["master"].pid),
                "sim": psutil.Process(os.getpid()),
            }
            counter = EventCounter(client)
            out["samples"] = soak_samples(client, procs, sim, counter, seconds)
            counter.poll()
            unwell = counter.of(EventType.AGENT_DEGRADED) + counter.of(EventType.AGENT_OFFLINE)
            out["agents_marked_unwell"] = sorted({a for _, a in unwell})
            out["running_at_end"] = running_count(GridState(client))
        finally:
            sim.stop()
    samples = out["samples"]
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[f"{key}_mean"] = round(sum(values) / len(values), 3)
        out[f"{key}_max"] = round(max(values), 3)
    return out


def soak_samples(
    client: Redis,
    procs: dict[str, psutil.Process],
    sim: Simulator,
    counter: EventCounter,
    seconds: float,
    every: float = 10.0,
) -> list[dict[str, float]]:
    """CPU (share of one core) and memory of each process, Redis' main thread, beat lag."""

    def cpu() -> dict[str, float]:
        times = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
        info: Mapping[str, Any] = client.info("cpu")
        times["redis_main"] = info["used_cpu_sys_main_thread"] + info["used_cpu_user_main_thread"]
        return times

    samples = []
    end = time.monotonic() + seconds
    before, at = cpu(), time.monotonic()
    sim.beats.take_lags()
    stop = threading.Event()
    while time.monotonic() < end:
        stop.wait(min(every, max(0.1, end - time.monotonic())))
        now_cpu, now = cpu(), time.monotonic()
        span = now - at
        lags = sim.beats.take_lags()
        memory: Mapping[str, Any] = client.info("memory")
        sample = {f"{k}_cpu": round((now_cpu[k] - before[k]) / span, 3) for k in now_cpu}
        sample.update(
            {f"{k}_rss_mib": round(p.memory_info().rss / 2**20, 1) for k, p in procs.items()}
        )
        sample["redis_used_mib"] = round(int(memory["used_memory"]) / 2**20, 1)
        sample["beat_lag_max_s"] = round(max(lags), 3) if lags else 0.0
        counter.poll()
        sample["unwell_events"] = float(
            len(counter.of(EventType.AGENT_DEGRADED)) + len(counter.of(EventType.AGENT_OFFLINE))
        )
        say(f"soak: {sample}")
        samples.append(sample)
        before, at = now_cpu, now
    return samples


# ---- main ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help=f"comma-separated sections of: {','.join(SECTIONS)}")
    parser.add_argument("--beats", type=int, default=500)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--soak-seconds", type=float, default=600.0)
    parser.add_argument("--soak-agents", type=int, default=5000)
    parser.add_argument("--soak-nodes", type=int, default=50_000)
    parser.add_argument("--soak-step", type=int, default=5000, help="nodes added per step")
    parser.add_argument("--soak-shared", action="store_true", help="nodes share one socket")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C: the finally blocks stop the master and Redis
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    only = set(args.only.split(",")) if args.only else set(SECTIONS) - {"soak"}
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    settings = load_settings()
    result: dict[str, Any] = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="grid-bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        server = EmbeddedRedis(data_dir=tmp / "redis", appendonly=False)
        url = server.start()
        client = redis_client(url)
        try:
            result["baseline"] = bench_baseline(client, url, 500)
            if "heartbeat" in only:
                result["heartbeat"] = bench_heartbeat(
                    client, settings, (1000, 10_000, 50_000), args.beats
                )
            if "health" in only:
                result["health"] = bench_health(
                    client,
                    settings,
                    ((100, 1000), (1000, 10_000), (5000, 10_000), (5000, 50_000)),
                    args.reps,
                )
            if "dispatch" in only:
                result["dispatch"] = bench_dispatch(client, url, settings, (1000, 5000, 10_000))
            if "registration" in only:
                result["registration"] = bench_registration(client, settings, (100, 1000, 5000))
            if "scale" in only:
                result["scale"] = bench_scale(
                    client, url, settings, tmp, ((100, 1000), (500, 5000), (1000, 10_000))
                )
            if "offline" in only:
                result["offline"] = bench_offline(client, url, settings, tmp, (1, 20, 100))
            if "soak" in only:
                result["soak"] = bench_soak(
                    client,
                    url,
                    settings,
                    tmp,
                    server,
                    args.soak_agents,
                    args.soak_nodes,
                    args.soak_seconds,
                    args.soak_step,
                    args.soak_shared,
                )
        finally:
            client.close()
            server.stop()
    result["verdict"] = verdict(targets(result))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, check in result["verdict"].items():
            say(
                f"{name}: {check['value']} (target <= {check['target']}) "
                f"{'met' if check['met'] else 'MISSED' if check['met'] is False else '-'}"
            )
    return 0


def targets(result: dict[str, Any]) -> dict[str, tuple[float | None, float]]:
    def pick(
        section: str, match: Callable[[dict[str, Any]], bool], key: Callable[[Any], float]
    ) -> float | None:
        rows = result.get(section)
        rows = rows if isinstance(rows, list) else (rows or {}).get("runs", [])
        found = [key(r) for r in rows if match(r)]
        return found[0] if found else None

    beats = result.get("heartbeat") or []
    flat = (
        round(beats[-1]["commands_per_beat"] - beats[0]["commands_per_beat"], 2)
        if len(beats) > 1
        else None
    )
    soak = result.get("soak") or {}
    return {
        "heartbeat commands, 50k minus 1k records (flat: 0)": (flat, 0.0),
        "health tick p50 ms at 5,000 agents / 10k nodes": (
            pick(
                "health",
                lambda r: r["agents"] == 5000 and r["nodes"] == 10_000,
                lambda r: r["health_tick_ms"]["p50"],
            ),
            50.0,
        ),
        "no-op reconcile p50 ms at 5,000 agents / 50k nodes": (
            pick("health", lambda r: r["nodes"] == 50_000, lambda r: r["reconcile_noop_ms"]["p50"]),
            50.0,
        ),
        "10,000 spawns enqueued, s": (
            pick("dispatch", lambda r: r["spawns"] == 10_000, lambda r: r["reconcile_s"]),
            1.0,
        ),
        "scale 0 -> 10,000 on 1,000 agents, s": (
            pick("scale", lambda r: r["nodes"] == 10_000, lambda r: r["seconds"]),
            30.0,
        ),
        "100 agents offline: replaced and running, s": (
            pick("offline", lambda r: r["k"] == 100, lambda r: r["offline_to_replaced_s"]),
            10.0,
        ),
        "soak: Redis main thread, share of a core": (soak.get("redis_main_cpu_mean"), 0.5),
        "soak: agents falsely marked unwell": (
            float(len(soak["agents_marked_unwell"])) if soak else None,
            0.0,
        ),
    }


if __name__ == "__main__":
    sys.exit(main())
