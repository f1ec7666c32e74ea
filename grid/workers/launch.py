"""Starting the Celery worker that hosts an agent or master runtime."""

from __future__ import annotations

import os
from typing import Any

from grid.celery_app import app, configure


def run_worker(
    redis_url: str,
    hostname: str,
    queues: list[str],
    pool: str,
    concurrency: int,
    loglevel: str,
    consumer_steps: tuple[Any, ...] = (),
) -> int:
    """Run a Celery worker in this process until it is told to stop; returns its exit code."""
    os.environ.setdefault("C_FORCE_ROOT", "1")  # containers and CI run as root
    configure(redis_url)
    for step in consumer_steps:
        app.steps["consumer"].add(step)
    worker = app.Worker(
        hostname=hostname,
        queues=queues,
        pool_cls=pool,
        concurrency=concurrency,
        loglevel=loglevel,
        without_mingle=True,
        without_gossip=True,
        optimization="fair",
        quiet=True,
        no_color=True,
    )
    worker.start()
    return int(worker.exitcode or 0)
