"""The simulator: many agents in one process, speaking the real protocol.

Each simulated agent is a real `AgentRuntime` on the `sim` platform, registered through its
real `start()` (claim, register, adopt, watch) with no threads of its own: `BeatScheduler`
drives every agent's `heartbeat()`, a few `GroupConsumer`s read every agent's own queue. On
top, chaos on demand: node crashes through the runtime's supervision path, agents going
silent (no beats, no consuming: to the master a lost machine), and churn (an agent leaves
cleanly, a new one joins).
"""

from __future__ import annotations

import itertools
import logging
import random
import resource
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from grid.core.connection import Clients, redis_client
from grid.core.errors import ConfigError
from grid.core.settings import Settings
from grid.platforms.sim import close_sim_host, sim_host
from grid.workers.agent.runtime import AgentOptions, AgentRuntime
from grid.workers.agent.sim.beats import BeatScheduler
from grid.workers.agent.sim.queues import GroupConsumer, Reply

log = logging.getLogger(__name__)


@dataclass
class SimOptions:
    agents: int
    nodes_per_agent: int
    prefix: str = "sim"
    churn: float = 0.0  # agents leaving (each replaced by a new one joining) per second
    crash_rate: float = 0.0  # node crashes per second
    silent: int = 0  # agents that go silent when the chaos starts
    chaos_after: float | None = 0.0  # seconds after start-up; None: on `start_chaos()` only
    chaos_for: float | None = None  # seconds of churn and crashes; None: until the end
    shared_endpoint: bool = False
    consumers: int = 8
    beat_threads: int = 4
    join_threads: int = 8
    seed: int | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class SimAgent:
    runtime: AgentRuntime
    consumer: GroupConsumer
    silent: bool = False


class Simulator:
    def __init__(
        self,
        settings: Settings,
        clients: Clients,
        broker_url: str,
        options: SimOptions,
        reply: Reply | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.options = options
        self.say = say
        self.rng = random.Random(options.seed)
        self.host = sim_host()
        self.agents: dict[str, SimAgent] = {}
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self.beats = BeatScheduler(settings.heartbeat_interval, self._beat, options.beat_threads)
        self.consumers = [
            GroupConsumer(broker_url, f"sim-consumer-{i}", reply)
            for i in range(max(1, min(options.consumers, options.agents)))
        ]
        self.registration_ms: list[float] = []  # each agent's start(): claim, register, adopt
        self.counts = {"crashes": 0, "left": 0, "joined": 0, "silenced": 0}
        self.silenced: list[str] = []
        self.chaos_started: float | None = None
        self.chaos_ended: float | None = None
        self._chaos_go = threading.Event()

    # ---- agents -----------------------------------------------------------------------

    def _new_id(self) -> str:
        return f"{self.options.prefix}-{next(self._numbers):05d}"

    def join(self, agent_id: str) -> SimAgent:
        """Register one simulated agent and start beating and consuming for it."""
        opts = AgentOptions(
            agent_id=agent_id,
            platform="sim",
            max_nodes=self.options.nodes_per_agent,
            labels=dict(self.options.labels),
            platform_config={"shared_endpoint": self.options.shared_endpoint},
        )
        runtime = AgentRuntime(self.settings, self.clients, opts)
        started = time.perf_counter()
        runtime.start(background=False)
        elapsed = (time.perf_counter() - started) * 1000
        consumer = self.consumers[zlib_index(agent_id, len(self.consumers))]
        agent = SimAgent(runtime, consumer)
        with self._lock:
            self.agents[agent_id] = agent
            self.registration_ms.append(elapsed)
        consumer.add(runtime)
        self.beats.add(agent_id, self.rng.uniform(0, self.settings.heartbeat_interval))
        return agent

    def leave(self, agent_id: str) -> None:
        """Stop one agent as `grid agent` does on Ctrl-C: its nodes stop, it unregisters."""
        with self._lock:
            agent = self.agents.pop(agent_id, None)
        if agent is None:
            return
        self.beats.remove(agent_id)
        agent.consumer.remove(agent.runtime)
        agent.runtime.shutdown(stop_nodes=True)

    def silence(self, agent_ids: list[str]) -> None:
        """These agents stop beating and consuming; their nodes keep running, unreachable."""
        for agent_id in agent_ids:
            agent = self.agents[agent_id]
            agent.silent = True
            self.beats.remove(agent_id)
            agent.consumer.remove(agent.runtime)
        self.silenced += agent_ids
        self.counts["silenced"] += len(agent_ids)

    def live(self) -> list[SimAgent]:
        with self._lock:
            return [a for a in self.agents.values() if not a.silent]

    def _beat(self, agent_id: str) -> None:
        agent = self.agents.get(agent_id)
        if agent is not None and not agent.silent:
            agent.runtime.heartbeat()

    # ---- chaos ------------------------------------------------------------------------

    def crash_one(self) -> str | None:
        """Crash a random running node of a random live agent; its node id."""
        live = self.live()
        for agent in self.rng.sample(live, min(len(live), 20)):
            running = agent.runtime.watched_ids()
            if running:
                node_id = self.rng.choice(running)
                if self.host.crash(agent.runtime.agent_id, node_id):
                    self.counts["crashes"] += 1
                    return node_id
        return None

    def churn_one(self) -> None:
        """A random live agent leaves; a new one joins."""
        live = self.live()
        if live:
            self.leave(self.rng.choice(live).runtime.agent_id)
            self.counts["left"] += 1
        self.join(self._new_id())
        self.counts["joined"] += 1

    def pick_silent(self, count: int) -> list[str]:
        """`count` live agents, those running nodes first."""
        live = self.live()
        self.rng.shuffle(live)
        live.sort(key=lambda a: not a.runtime.watched_ids())
        return [a.runtime.agent_id for a in live[:count]]

    def start_chaos(self) -> None:
        self._chaos_go.set()

    # ---- the run ----------------------------------------------------------------------

    def start(self) -> None:
        """Register every agent (in parallel), then beat and consume."""
        for consumer in self.consumers:
            consumer.start()
        self.beats.start()
        ids = [self._new_id() for _ in range(self.options.agents)]
        with ThreadPoolExecutor(self.options.join_threads, thread_name_prefix="sim-join") as pool:
            list(pool.map(self.join, ids))

    def run(self, stop: threading.Event, duration: float | None, every: float = 5.0) -> None:
        """Chaos and progress lines until `stop` is set or `duration` has passed."""
        begin = time.monotonic()
        end = None if duration is None else begin + duration
        next_line = begin + every
        due: dict[str, float] = {}
        chaos_at = None if self.options.chaos_after is None else begin + self.options.chaos_after
        while not stop.is_set() and (end is None or time.monotonic() < end):
            now = time.monotonic()
            if self.chaos_started is None and (
                self._chaos_go.is_set() or (chaos_at is not None and now >= chaos_at)
            ):
                self._begin_chaos(now, due)
            if self.chaos_started is not None and self.chaos_ended is None:
                if self.options.chaos_for is not None and (
                    now >= self.chaos_started + self.options.chaos_for
                ):
                    self.chaos_ended = now
                    self.say(f"chaos over after {now - self.chaos_started:.1f}s: {self.counts}")
                else:
                    self._chaos_step(now, due)
            if now >= next_line:
                self.say(self.progress())
                next_line += every
            wake = min([next_line, *due.values(), *([end] if end else [])])
            stop.wait(max(0.001, min(0.5, wake - time.monotonic())))

    def _begin_chaos(self, now: float, due: dict[str, float]) -> None:
        self.chaos_started = now
        if self.options.silent:
            ids = self.pick_silent(self.options.silent)
            self.silence(ids)
            self.say(f"silent agents: {' '.join(ids)}")
        for name, rate in (("crash", self.options.crash_rate), ("churn", self.options.churn)):
            if rate > 0:
                due[name] = now + self.rng.expovariate(rate)
        if due:
            self.say("chaos started")

    def _chaos_step(self, now: float, due: dict[str, float]) -> None:
        actions = {"crash": self.crash_one, "churn": self.churn_one}
        rates = {"crash": self.options.crash_rate, "churn": self.options.churn}
        for name in list(due):
            while due[name] <= now:
                try:
                    actions[name]()
                except Exception:  # chaos must go on
                    log.exception("simulated %s failed", name)
                due[name] += self.rng.expovariate(rates[name])

    def progress(self) -> str:
        lags = self.beats.take_lags()
        lag = max(lags) if lags else 0.0
        live = self.live()
        nodes = sum(len(a.runtime.watched_ids()) for a in live)
        handled = sum(sum(c.handled.values()) for c in self.consumers)
        return (
            f"agents {len(live)} live, {len(self.agents) - len(live)} silent; "
            f"{nodes} nodes running on live agents; beats {self.beats.beats} "
            f"(max lag {lag * 1000:.0f} ms, {self.beats.failures} failed); "
            f"tasks {handled}; crashes {self.counts['crashes']}, left {self.counts['left']}, "
            f"joined {self.counts['joined']}"
        )

    def summary(self) -> dict[str, Any]:
        reg = sorted(self.registration_ms)
        handled: dict[str, int] = {}
        for consumer in self.consumers:
            for name, count in consumer.handled.items():
                handled[name] = handled.get(name, 0) + count
        return {
            "agents": len(self.agents),
            "silent": self.silenced,
            "beats": self.beats.beats,
            "beat_failures": self.beats.failures,
            "tasks": handled,
            "task_errors": sum(c.errors for c in self.consumers),
            "registration_ms_p50": round(reg[len(reg) // 2], 3) if reg else None,
            **self.counts,
        }

    def stop(self) -> None:
        """Stop beating and consuming, then every agent leaves (nodes stopped, unregistered)."""
        self.beats.stop()
        for consumer in self.consumers:
            consumer.stop()
        ids = list(self.agents)
        if ids:
            with ThreadPoolExecutor(self.options.join_threads) as pool:
                list(pool.map(self.leave, ids))
        close_sim_host()


#: Redis connections the simulator's threads share (beyond it they wait for one)
CONNECTIONS = 64


def sim_clients(state_url: str, events_url: str) -> Clients:
    """The simulator's clients: its many threads share bounded, blocking pools."""
    state = redis_client(state_url, max_connections=CONNECTIONS)
    if events_url == state_url:
        return Clients(state=state, events=state)
    return Clients(state=state, events=redis_client(events_url, max_connections=CONNECTIONS))


#: descriptors kept for Redis and broker connections, probes and the rest of the process
FD_MARGIN = 1000


def check_descriptors(nodes: int) -> None:
    """Raise the soft descriptor limit to the hard one; ConfigError if one socket per node
    (the sim platform's default) cannot fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if nodes + FD_MARGIN > hard:
        raise ConfigError(
            f"{nodes} simulated nodes need a socket each, the descriptor limit is {hard}: "
            "use --shared-endpoint (all nodes answer on one socket) or fewer nodes"
        )


def zlib_index(agent_id: str, buckets: int) -> int:
    """A stable consumer for an agent id (Python's hash() changes between runs)."""
    return zlib.crc32(agent_id.encode()) % buckets
