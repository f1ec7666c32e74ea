"""Glue between the master and the autoscaler package: placement rules and the beat tick.

It takes the master's state, event log, settings and a reconcile callback, not the master
runtime, so the runtime imports this module and nothing here imports the runtime back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from grid.autoscaler.metrics import MetricsStore
from grid.autoscaler.service import evaluate_due_pools, list_policies
from grid.core.events import EventLog, EventType
from grid.core.placement_rules import PlacementRules
from grid.core.rtypes import Redis
from grid.core.settings import Settings
from grid.core.state import GridState

log = logging.getLogger(__name__)


def placement_rules(client: Redis) -> dict[str, PlacementRules]:
    """Placement rules of every pool with an applied policy."""
    return {p.pool: p.placement for p in list_policies(client)}


def run_autoscaler(
    state: GridState,
    events: EventLog,
    settings: Settings,
    reconcile: Callable[[str], object],
) -> dict[str, Any]:
    """Evaluate every due policy; a changed size is written and reconciled at once."""

    def current_size(pool: str) -> int:
        return state.desired().get(pool, 0)

    def set_desired(pool: str, size: int, reason: str) -> None:
        before = state.desired().get(pool, 0)
        state.set_desired(pool, size)
        events.emit(
            EventType.SCALE_REQUESTED,
            f"pool {pool}: desired {before} -> {size} by the autoscaler: {reason}",
            pool=pool,
            desired=size,
            previous=before,
            source="autoscaler",
        )
        reconcile(f"autoscaler: {pool} -> {size}")

    def emit(kind: str, payload: dict[str, Any]) -> None:
        events.emit(
            EventType(kind),
            f"pool {payload.get('pool', '')}: {payload.get('reason', '')}",
            pool=str(payload.get("pool", "")),
            decision=payload,
        )

    source = MetricsStore(
        events.client,  # metrics live with the events; policies and their state with the state
        retention=settings.metrics_retention,
        history_retention=settings.metrics_history_retention,
    )
    decisions = evaluate_due_pools(
        state.r, time.time(), current_size, set_desired, emit, source=source
    )
    return {"evaluated": len(decisions), "changed": sum(1 for d in decisions if d.applied)}
