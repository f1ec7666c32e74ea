"""The batched writer: emitters append to a bounded in-process buffer; one thread writes it
out in batches (by size, or after `flush_interval`), one round trip per batch.

A full buffer makes emitters wait (backpressure) up to `put_timeout`, then the event is
dropped with a warning: a Redis outage must not stall an agent's task threads forever.
A failed batch is kept and retried (at least once: a batch whose reply was lost may be
written twice). `close()` (also run at interpreter exit) writes out
everything buffered before it returns.
"""

from __future__ import annotations

import atexit
import collections
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import redis

from grid.core.events.store import EventStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class BufferedWriter:
    def __init__(
        self,
        store: EventStore,
        batch_size: int = 1000,
        flush_interval: float = 0.05,
        capacity: int = 100_000,
        put_timeout: float = 5.0,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.capacity = capacity
        self.put_timeout = put_timeout
        self.written = 0
        self.dropped = 0
        self._buffer: collections.deque[Sequence[str]] = collections.deque()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._closed = False
        self._oldest = 0.0  # monotonic time the oldest buffered event arrived
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def _reset_after_fork(self) -> None:
        """A forked child has the buffer but not the thread: it starts afresh, empty (the
        parent writes what it had buffered)."""
        self._buffer = collections.deque()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._thread = None
        self._pid = os.getpid()

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, values: Sequence[str]) -> bool:
        """Buffer one event's values; False if it was dropped (buffer full, or closed)."""
        if self._pid != os.getpid():
            self._reset_after_fork()
        with self._cond:
            if self._thread is None and not self._closed:
                self._start()
            if len(self._buffer) >= self.capacity:
                deadline = time.monotonic() + self.put_timeout
                while len(self._buffer) >= self.capacity and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            if self._closed or len(self._buffer) >= self.capacity:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 10_000 == 0:
                    log.warning("event buffer full or closed: %d events dropped", self.dropped)
                return False
            if not self._buffer:
                self._oldest = time.monotonic()
            self._buffer.append(values)
            if len(self._buffer) == self.batch_size:
                self._cond.notify_all()
            return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything buffered so far is written; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._oldest = 0.0  # due now
            self._cond.notify_all()
            while self._buffer or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return not (self._buffer or self._in_flight)
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write out what is buffered, then stop the thread; later puts are dropped."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.error("event writer did not finish within %.0fs", timeout)
        atexit.unregister(self.close)
        with self._cond:
            if self._buffer:
                log.error("%d buffered events not written at close", len(self._buffer))

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _take(self) -> list[Sequence[str]] | None:
        """The next batch once one is due; None when closed and drained."""
        with self._cond:
            while True:
                if self._buffer:
                    due = self._oldest + self.flush_interval - time.monotonic()
                    if len(self._buffer) >= self.batch_size or due <= 0 or self._closed:
                        break
                    self._cond.wait(due)
                elif self._closed:
                    return None
                else:
                    self._cond.wait()
            count = min(len(self._buffer), self.batch_size)
            batch = [self._buffer.popleft() for _ in range(count)]
            self._in_flight = count
            self._oldest = time.monotonic()
            self._cond.notify_all()  # room for waiting emitters
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                if not self._write(batch):
                    return  # closed while Redis was away: close() reports what is left
            except Exception:  # the thread must outlive one bad batch, or emitters would block
                log.exception("dropping %d events that could not be written", len(batch))
                with self._cond:
                    self.dropped += len(batch)
                    self._in_flight = 0
                    self._cond.notify_all()

    def _write(self, batch: list[Sequence[str]]) -> bool:
        """Store and index one batch, retrying; False if closed before it could be written."""
        ids = self._retry(functools.partial(self.store.add_batch, batch), len(batch))
        with self._cond:
            if ids is None:
                self._buffer.extendleft(reversed(batch))
            else:
                self.written += len(batch)
            self._in_flight = 0
            self._cond.notify_all()
        return ids is not None

    def _retry(self, step: Callable[[], T], count: int) -> T | None:
        """step() until it succeeds, backing off; None if closed meanwhile."""
        backoff = 0.05
        while True:
            try:
                return step()
            except redis.RedisError as exc:
                log.warning("writing %d events failed, retrying: %s", count, exc)
            with self._cond:
                if self._closed:
                    log.error("writing %d events failed at close", count)
                    return None
                self._cond.wait(backoff)
            backoff = min(backoff * 2, 2.0)
