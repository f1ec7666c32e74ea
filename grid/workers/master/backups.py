"""Scheduled backups, taken by the leading master.

The beat sends `grid.backup_tick` every `min(GRID_BACKUP_INTERVAL, 60 s)`; a tick starts a
backup when the newest scheduled backup in the folder is older than the interval (so a
master that restarts or a new leader on the same host keeps the cadence, rather than
starting the interval over), or, in a folder with none, once this master has led for one
interval (a grid that runs for minutes, a test or a benchmark, never takes one by default).

The backup runs on a thread of its own, never on one of the worker's threads, so the
health, reconcile and autoscale passes never wait behind it; a tick that finds one running
is skipped. Afterwards all but the GRID_BACKUP_KEEP newest scheduled
backups are deleted and a `backup_created` (or `backup_failed`) event is written.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

from grid.core.backup.files import backup_dir, newest_time, rotate
from grid.core.backup.service import create_backup
from grid.core.errors import GridError
from grid.core.events import EventLog, EventType
from grid.core.settings import Settings

log = logging.getLogger(__name__)

TICK_MAX = 60.0  # seconds: the longest a due backup waits for its tick


def tick_interval(settings: Settings) -> float:
    return min(settings.backup_interval, TICK_MAX)


class ScheduledBackups:
    def __init__(self, settings: Settings, events: EventLog) -> None:
        self.settings = settings
        self.events = events
        self.folder = backup_dir(settings)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.leading_since = time.time()

    def elected(self) -> None:
        self.leading_since = time.time()

    def due(self, now: float | None = None) -> bool:
        last = newest_time(self.folder) or self.leading_since
        now = time.time() if now is None else now
        return now - last >= self.settings.backup_interval - 0.05

    def tick(self) -> dict[str, Any]:
        """Start a backup on its own thread when one is due and none is running."""
        if not self._lock.acquire(blocking=False):
            return {"skipped": "a backup tick is running"}
        try:
            if self._thread is not None and self._thread.is_alive():
                return {"skipped": "a backup is running"}
            if not self.due():
                return {"due": False}
            self._thread = threading.Thread(target=self.run, name="master-backup", daemon=True)
            self._thread.start()
            return {"started": True}
        finally:
            self._lock.release()

    def run(self) -> None:
        """One scheduled backup, then the rotation; failures become an event, never raise."""
        try:
            done = create_backup(self.settings, self.folder, trigger="scheduled")
            removed = rotate(self.folder, self.settings.backup_keep)
        except (GridError, redis.RedisError, OSError) as exc:
            log.warning("scheduled backup failed: %s", exc)
            self._emit(EventType.BACKUP_FAILED, f"scheduled backup failed: {exc}", error=str(exc))
            return
        self._emit(
            EventType.BACKUP_CREATED,
            f"backup {done.path.name}: {done.header.total_keys} keys in {done.seconds:.2f}s",
            file=str(done.path),
            keys=done.header.total_keys,
            seconds=round(done.seconds, 3),
            removed=[p.name for p in removed],
        )

    def _emit(self, kind: EventType, message: str, **data: Any) -> None:
        try:
            self.events.emit(kind, message, **data)
        except redis.RedisError as exc:
            log.warning("could not record %s: %s", kind.value, exc)

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
