"""The name of every Celery task, in one place: senders (CLI, master) and the task
definitions (grid.tasks) use these, never a string of their own."""

from __future__ import annotations

from enum import StrEnum


class TaskName(StrEnum):
    # consumed by the leading master on naming.MASTER_QUEUE
    RECONCILE = "grid.reconcile"
    HEALTH_TICK = "grid.health_tick"
    AUTOSCALE_TICK = "grid.autoscale_tick"
    BACKUP_TICK = "grid.backup_tick"  # starts a scheduled backup when one is due
    # consumed by one agent on naming.agent_queue(agent_id)
    SPAWN_NODE = "grid.spawn_node"
    STOP_NODE = "grid.stop_node"
    SPAWN_NODES = "grid.spawn_nodes"  # the master's batch: every node it placed on the agent
    STOP_NODES = "grid.stop_nodes"
    NODE_LOGS = "grid.node_logs"
    PING_AGENT = "grid.ping_agent"
