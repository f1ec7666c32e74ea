"""Celery task definitions: agent-side (per-agent queues) and master-side (grid.master)."""
