"""Tasks consumed by one agent on its own queue `grid.agent.<id>`; all idempotent by node id."""

from __future__ import annotations

import time
from typing import Any

from grid.core.celery_app import app
from grid.core.errors import PlatformUnavailableError
from grid.core.tasknames import TaskName
from grid.workers.agent.runtime import current_agent

# Spawn and stop retry while the platform is unreachable (the daemon or API server restarts).
RETRY_WHILE_UNAVAILABLE: dict[str, Any] = {
    "autoretry_for": (PlatformUnavailableError,),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "max_retries": 5,
}


@app.task(name=TaskName.SPAWN_NODE, **RETRY_WHILE_UNAVAILABLE)
def spawn_node(node_id: str) -> dict[str, Any]:
    return current_agent().spawn(node_id)


@app.task(name=TaskName.STOP_NODE, **RETRY_WHILE_UNAVAILABLE)
def stop_node(node_id: str) -> dict[str, Any]:
    return current_agent().stop(node_id)


@app.task(name=TaskName.SPAWN_NODES, **RETRY_WHILE_UNAVAILABLE)
def spawn_nodes(node_ids: list[str]) -> dict[str, Any]:
    """One message per agent per reconcile pass; each node is still idempotent by id."""
    return current_agent().spawn_many(node_ids)


@app.task(name=TaskName.STOP_NODES, **RETRY_WHILE_UNAVAILABLE)
def stop_nodes(node_ids: list[str]) -> dict[str, Any]:
    return current_agent().stop_many(node_ids)


@app.task(name=TaskName.NODE_LOGS, ignore_result=False)
def node_logs(node_id: str, lines: int = 100) -> str:
    return current_agent().logs(node_id, lines)


@app.task(name=TaskName.PING_AGENT, ignore_result=False)
def ping_agent(sent_at: float) -> dict[str, float]:
    """Round trip probe for benchmarks: echoes when it was sent and when it ran."""
    return {"sent_at": sent_at, "ran_at": time.time()}
