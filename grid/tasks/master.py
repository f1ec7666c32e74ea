"""Tasks consumed only by the leading master on `grid.master` (it subscribes when elected)."""

from __future__ import annotations

from typing import Any

from grid.core.celery_app import app
from grid.workers.master.runtime import current_master

RECONCILE = "grid.reconcile"
HEALTH_TICK = "grid.health_tick"
AUTOSCALE_TICK = "grid.autoscale_tick"


@app.task(name=RECONCILE)
def reconcile(reason: str = "") -> dict[str, Any]:
    return current_master().reconcile(reason)


@app.task(name=HEALTH_TICK)
def health_tick() -> dict[str, Any]:
    return current_master().health_tick()


@app.task(name=AUTOSCALE_TICK)
def autoscale_tick() -> dict[str, Any]:
    return current_master().autoscale_tick()
