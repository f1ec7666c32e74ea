"""`grid load`: open-loop HTTP traffic at a pool's nodes, so a user can watch autoscaling.

Requests are scheduled at a fixed rate whatever the latency (open loop), spread round-robin
over the pool's running nodes, re-read every second so new nodes get traffic as they come.
Half are PUTs and half GETs of a small key set. Stops by itself after `duration`.
"""

from __future__ import annotations

import http.client
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadReport:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def quantile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "rate": round(self.sent / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": self.quantile(0.5),
            "p99_ms": self.quantile(0.99),
            "seconds": round(self.elapsed, 2),
        }


class _Worker(threading.Thread):
    """Sends the requests it is handed, keeping one connection per endpoint."""

    def __init__(
        self, jobs: queue.Queue[tuple[str, str] | None], report: LoadReport, lock: threading.Lock
    ) -> None:
        super().__init__(daemon=True)
        self.jobs = jobs
        self.report = report
        self.lock = lock
        self.conns: dict[str, http.client.HTTPConnection] = {}

    def run(self) -> None:
        while (job := self.jobs.get()) is not None:
            endpoint, key = job
            started = time.perf_counter()
            ok = self._send(endpoint, key)
            elapsed = (time.perf_counter() - started) * 1000
            with self.lock:
                if ok:
                    self.report.ok += 1
                    self.report.latencies_ms.append(elapsed)
                else:
                    self.report.errors += 1
        for conn in self.conns.values():
            conn.close()

    def _send(self, endpoint: str, key: str) -> bool:
        conn = self.conns.get(endpoint)
        if conn is None:
            parts = urlsplit(endpoint)
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
            self.conns[endpoint] = conn
        try:
            if random.random() < 0.5:
                conn.request("PUT", f"/kv/{key}", body=b"x" * 64)
            else:
                conn.request("GET", f"/kv/{key}")
            resp = conn.getresponse()
            resp.read()
            return resp.status < 500
        except (OSError, http.client.HTTPException):
            conn.close()
            self.conns.pop(endpoint, None)
            return False


def run_load(
    endpoints: Callable[[], list[str]],
    rps: float,
    duration: float,
    concurrency: int = 16,
    progress: Callable[[float, LoadReport], None] | None = None,
) -> LoadReport:
    """Send `rps` requests a second for `duration` seconds to whatever `endpoints()` returns."""
    report = LoadReport()
    lock = threading.Lock()
    jobs: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=max(64, int(rps)))
    workers = [_Worker(jobs, report, lock) for _ in range(concurrency)]
    for worker in workers:
        worker.start()
    start = time.monotonic()
    targets = endpoints()
    refreshed = start
    n = 0
    try:
        while (now := time.monotonic()) - start < duration:
            if now - refreshed >= 1.0:
                targets = endpoints() or targets
                refreshed = now
                if progress is not None:
                    report.elapsed = now - start
                    progress(now - start, report)
            due = int((now - start) * rps)
            while n < due and targets:
                try:
                    jobs.put_nowait((targets[n % len(targets)], f"load-{n % 1000}"))
                except queue.Full:
                    report.errors += 1  # the nodes cannot keep up: count as dropped
                n += 1
                report.sent += 1
            time.sleep(min(0.01, 1.0 / max(rps, 1.0)))
    finally:
        for _ in workers:
            jobs.put(None)
        for worker in workers:
            worker.join(timeout=10)
        report.elapsed = time.monotonic() - start
    return report
