"""Tasks consumed only by the leading master on `grid.master` (it subscribes when elected)."""

from __future__ import annotations

from typing import Any

from grid.core.celery_app import app
from grid.core.tasknames import TaskName
from grid.tasks.written import events_flushed
from grid.workers.master.runtime import current_master


@app.task(name=TaskName.RECONCILE)
@events_flushed(current_master)
def reconcile(reason: str = "") -> dict[str, Any]:
    return current_master().reconcile(reason)


@app.task(name=TaskName.HEALTH_TICK)
@events_flushed(current_master)
def health_tick() -> dict[str, Any]:
    return current_master().health_tick()


@app.task(name=TaskName.AUTOSCALE_TICK)
@events_flushed(current_master)
def autoscale_tick() -> dict[str, Any]:
    return current_master().autoscale_tick()


@app.task(name=TaskName.BACKUP_TICK)
@events_flushed(current_master)
def backup_tick() -> dict[str, Any]:
    return current_master().backup_tick()


@app.task(name=TaskName.EVENTS_TRIM)
@events_flushed(current_master)
def events_trim() -> dict[str, Any]:
    return current_master().trim_events()
