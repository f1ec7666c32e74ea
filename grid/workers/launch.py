"""Starting the Celery worker that hosts an agent or master runtime."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery.platforms import EX_FAILURE
from celery.worker import state as worker_state

from grid.core.celery_app import app, configure

log = logging.getLogger(__name__)


def run_worker(
    broker_url: str,
    hostname: str,
    queues: list[str],
    pool: str,
    concurrency: int,
    loglevel: str,
    consumer_steps: tuple[Any, ...] = (),
) -> int:
    """Run a Celery worker in this process until it is told to stop; returns its exit code.

    A worker that dies of an error (not a requested stop) is started again: the runtime
    hosted in this process (agent or master) and its nodes live on.
    """
    os.environ.setdefault("C_FORCE_ROOT", "1")  # containers and CI run as root
    configure(broker_url)
    for step in consumer_steps:
        app.steps["consumer"].add(step)
    while True:
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
        code = int(worker.exitcode or 0)
        # Celery 5.7/kombu 5.7 can die of a broker outage ("Unrecoverable error: AttributeError
        # ... 'hostname'" when unacked tasks are restored after the connection was collected).
        # Unless we were told to stop, start a fresh worker: the runtime and its nodes live on.
        if code != EX_FAILURE or _stop_requested():
            return code
        log.error("celery worker %s died (exit %s); starting it again", hostname, code)
        time.sleep(1.0)


def _stop_requested() -> bool:
    """Celery's signal handlers set these (to an exit code, possibly 0) on a requested stop."""
    return any(
        flag is not None and flag is not False
        for flag in (worker_state.should_stop, worker_state.should_terminate)
    )
