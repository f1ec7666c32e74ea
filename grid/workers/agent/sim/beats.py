"""One scheduler for the heartbeats of many simulated agents.

A real agent beats from its own thread; thousands of agents in one process would be
thousands of threads. Here every agent has a due time in one heap, spread over the interval,
and a small pool of threads runs `AgentRuntime.heartbeat()` as each comes due. How late beats
start (`lag`) is kept: a late beat is what makes the master see an agent degraded.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import redis

log = logging.getLogger(__name__)


class BeatScheduler:
    def __init__(self, interval: float, beat: Callable[[str], None], threads: int = 4) -> None:
        self.interval = interval
        self._beat = beat
        self._heap: list[tuple[float, str, int]] = []
        self._active: dict[str, int] = {}  # agent id -> token of its live heap entry
        self._tokens = 0
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sim-beat")
        self._thread = threading.Thread(target=self._run, name="sim-beats", daemon=True)
        self.beats = 0
        self.failures = 0
        self._lags: list[float] = []  # seconds each beat started after its due time

    def start(self) -> None:
        self._thread.start()

    def add(self, agent_id: str, offset: float) -> None:
        """Beat `agent_id` every interval, the first `offset` seconds from now."""
        with self._lock:
            self._tokens += 1
            self._active[agent_id] = self._tokens
            heapq.heappush(self._heap, (time.monotonic() + offset, agent_id, self._tokens))
            self._lock.notify()

    def remove(self, agent_id: str) -> None:
        with self._lock:
            self._active.pop(agent_id, None)

    def take_lags(self) -> list[float]:
        """Lags of the beats started since the last call."""
        with self._lock:
            lags, self._lags = self._lags, []
        return lags

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                while self._heap and self._active.get(self._heap[0][1]) != self._heap[0][2]:
                    heapq.heappop(self._heap)  # removed (or re-added) agents leave it behind
                if not self._heap:
                    self._lock.wait(0.5)
                    continue
                due, agent_id, token = self._heap[0]
                now = time.monotonic()
                if due > now:
                    self._lock.wait(min(due - now, 0.5))
                    continue
                heapq.heapreplace(self._heap, (due + self.interval, agent_id, token))
            self._pool.submit(self._one, agent_id, due)

    def _one(self, agent_id: str, due: float) -> None:
        lag = time.monotonic() - due
        with self._lock:
            if agent_id not in self._active or self._stop.is_set():
                return
            self._lags.append(lag)
        try:
            self._beat(agent_id)
            self.beats += 1
        except redis.RedisError as exc:
            self.failures += 1
            log.warning("heartbeat failed: %s", exc, extra={"agent_id": agent_id})
        except Exception:  # one agent's error must not stop the others' beats
            self.failures += 1
            log.exception("heartbeat error", extra={"agent_id": agent_id})
