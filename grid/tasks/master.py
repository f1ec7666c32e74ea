"""Tasks consumed only by the leading master on `grid.master` (it subscribes when elected)."""

from __future__ import annotations

from typing import Any

from grid.core.celery_app import app
from grid.core.tasknames import TaskName
from grid.workers.master.runtime import current_master


@app.task(name=TaskName.RECONCILE)
def reconcile(reason: str = "") -> dict[str, Any]:
    return current_master().reconcile(reason)


@app.task(name=TaskName.HEALTH_TICK)
def health_tick() -> dict[str, Any]:
    return current_master().health_tick()


@app.task(name=TaskName.AUTOSCALE_TICK)
def autoscale_tick() -> dict[str, Any]:
    return current_master().autoscale_tick()


@app.task(name=TaskName.BACKUP_TICK)
def backup_tick() -> dict[str, Any]:
    return current_master().backup_tick()
