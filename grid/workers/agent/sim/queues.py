"""Consumers of the simulated agents' own queues: real kombu consumers, real Celery messages.

A real agent is a Celery worker on `grid.agent.<id>`. Here a few threads each own one kombu
connection and one `Consumer` over a group of agents' queues; a message's task name comes from
its headers, its args from its body (Celery protocol 2), and it is handled by the same
`AgentRuntime` method the task in `grid/tasks/agent.py` calls. Acknowledged after it ran
(acks_late), like the worker does. Queue changes (an agent joins, leaves or goes silent) are
applied by the thread that owns the consumer: kombu objects are not shared between threads.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from kombu import Connection, Consumer, Exchange, Message, Queue

from grid.core import naming
from grid.core.connection import celery_options
from grid.core.tasknames import TaskName
from grid.workers.agent.runtime import AgentRuntime

log = logging.getLogger(__name__)

#: task name -> the AgentRuntime method its task in grid/tasks/agent.py calls
METHODS: dict[str, Callable[..., Any]] = {
    TaskName.SPAWN_NODE: AgentRuntime.spawn,
    TaskName.STOP_NODE: AgentRuntime.stop,
    TaskName.SPAWN_NODES: AgentRuntime.spawn_many,
    TaskName.STOP_NODES: AgentRuntime.stop_many,
    TaskName.NODE_LOGS: AgentRuntime.logs,
}

#: stores a task's result for a caller that waits for it: (task id, result)
Reply = Callable[[str, Any], None]


def agent_queue(agent_id: str) -> Queue:
    """The queue as Celery declares it when the master sends to it (direct exchange)."""
    name = naming.agent_queue(agent_id)
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


class GroupConsumer:
    """One thread, one broker connection, the queues of a group of agents."""

    def __init__(self, url: str, name: str, reply: Reply | None = None) -> None:
        self.url = url
        self.name = name
        self._reply = reply
        self._runtimes: dict[str, AgentRuntime] = {}  # agent id -> runtime, as consumed
        self._consumers: dict[str, Consumer] = {}
        self._changes: list[tuple[bool, AgentRuntime, threading.Event]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.handled: collections.Counter[str] = collections.Counter()
        self.errors = 0

    def start(self) -> None:
        self._thread.start()

    def add(self, runtime: AgentRuntime) -> None:
        with self._lock:
            self._changes.append((True, runtime, threading.Event()))

    def remove(self, runtime: AgentRuntime, timeout: float = 30.0) -> None:
        """Stop consuming the agent's queue; returns once no task of it runs any more."""
        done = threading.Event()
        with self._lock:
            self._changes.append((False, runtime, done))
        if self._thread.is_alive() and not self._stop.is_set():
            done.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                url, options = celery_options(self.url)
                with Connection(url, transport_options=options) as conn:
                    self._consume(conn)
            except Exception:  # the broker went away, or anything else: connect again
                log.exception("%s: consumer failed; reconnecting", self.name)
                self._stop.wait(1.0)

    def _consume(self, conn: Connection) -> None:
        channel = conn.channel()
        with self._lock:  # after a reconnect every current queue is consumed again
            self._changes[:0] = [(True, r, threading.Event()) for r in self._runtimes.values()]
        self._runtimes.clear()
        self._consumers.clear()
        try:
            while not self._stop.is_set():
                self._apply_changes(channel)
                if not self._consumers:
                    self._stop.wait(0.1)
                    continue
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.25)
        finally:
            for consumer in self._consumers.values():
                consumer.cancel()

    def _apply_changes(self, channel: Any) -> None:
        with self._lock:
            changes, self._changes = self._changes, []
        for join, runtime, done in changes:
            agent_id = runtime.agent_id
            if join and agent_id not in self._consumers:
                consumer = Consumer(
                    channel,
                    queues=[agent_queue(agent_id)],
                    callbacks=[functools.partial(self._on_message, runtime)],
                    accept=["json"],
                )
                consumer.consume()
                self._consumers[agent_id] = consumer
                self._runtimes[agent_id] = runtime
            elif not join and agent_id in self._consumers:
                self._consumers.pop(agent_id).cancel()
                del self._runtimes[agent_id]
            done.set()

    def _on_message(self, runtime: AgentRuntime, body: Any, message: Message) -> None:
        name = str(message.headers.get("task", ""))
        try:
            method = METHODS.get(name)
            if method is None:
                log.warning("%s: task %r is not simulated; dropped", self.name, name)
                self.handled["unsupported"] += 1
            else:
                args, kwargs, _ = message.decode()
                result = method(runtime, *args, **kwargs)
                self.handled[name] += 1
                if self._reply is not None and not message.headers.get("ignore_result", True):
                    self._reply(str(message.headers.get("id", "")), result)
        except Exception:  # a failed task is acknowledged, as the Celery worker does
            self.errors += 1
            log.exception("%s: task %s failed", self.name, name,
                          extra={"agent_id": runtime.agent_id})  # fmt: skip
        message.ack()
