"""Grid: runs and scales fleets of storage nodes across machines over Celery and Redis."""

__version__ = "0.3.0"
