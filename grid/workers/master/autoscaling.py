"""Glue between the master and the autoscaler package: placement rules and the beat tick."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from grid.core.events import EventType
from grid.core.rtypes import Redis
from grid.workers.master.placement import PlacementRules

if TYPE_CHECKING:
    from grid.workers.master.runtime import MasterRuntime

log = logging.getLogger(__name__)


def placement_rules(client: Redis) -> dict[str, PlacementRules]:
    """Placement rules of every pool with an applied policy."""
    from grid.autoscaler.service import list_policies  # noqa: PLC0415

    return {p.pool: p.placement for p in list_policies(client)}


def run_autoscaler(master: MasterRuntime) -> dict[str, Any]:
    """Evaluate every due policy; a changed size is written and reconciled at once."""
    from grid.autoscaler.metrics import MetricsStore  # noqa: PLC0415
    from grid.autoscaler.service import evaluate_due_pools  # noqa: PLC0415

    state, events = master.state, master.events

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
        master.reconcile(f"autoscaler: {pool} -> {size}")

    def emit(kind: str, payload: dict[str, Any]) -> None:
        events.emit(
            EventType(kind),
            f"pool {payload.get('pool', '')}: {payload.get('reason', '')}",
            pool=str(payload.get("pool", "")),
            decision=payload,
        )

    source = MetricsStore(
        state.r,
        retention=master.settings.metrics_retention,
        history_retention=master.settings.metrics_history_retention,
    )
    decisions = evaluate_due_pools(
        state.r, time.time(), current_size, set_desired, emit, source=source
    )
    return {"evaluated": len(decisions), "changed": sum(1 for d in decisions if d.applied)}
