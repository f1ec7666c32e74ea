"""The Celery application: Redis broker and result backend, JSON only, events on.

Delivery is at-least-once (acks_late, reject_on_worker_lost, prefetch 1): every task is
idempotent by node id. The broker URL is bound at run time by `configure`.
"""

from __future__ import annotations

from celery import Celery

from grid.core import naming
from grid.core.broker import transport_for
from grid.core.connection import celery_options

app = Celery("grid", include=["grid.tasks.agent", "grid.tasks.master"])

#: Longer than any task may wait in a queue or run: a task is redelivered only after this.
VISIBILITY_TIMEOUT = 3600

#: A broker that vanishes without closing its TCP connections (a hung primary, a failover
#: behind a partition) must not hang a publish forever (kombu's default: no timeout), and
#: a consumer's BRPOP overdue by brpop_timeout + health_check_interval is reconnected
#: (kombu 5.7's check; its default 25 s would keep a worker idle for about 51 s).
BROKER_SOCKET_OPTIONS = {
    "socket_connect_timeout": 2,
    "socket_timeout": 10,
    "health_check_interval": 5,
}


def configure(broker_url: str) -> Celery:
    """Bind the app to its broker (`connection.broker_url(settings)`), which also holds
    the results. A Sentinel URL selects kombu's `sentinel://` transport and Celery's
    Sentinel result backend; both take the master set's name as a transport option."""
    url, sentinel_options = celery_options(broker_url)
    app.conf.update(
        broker_url=url,
        broker_transport=transport_for(url),  # drops unreadable queue entries
        result_backend=url,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_default_queue=naming.MASTER_QUEUE,
        task_ignore_result=True,
        result_expires=600,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT,
            **BROKER_SOCKET_OPTIONS,
            **sentinel_options,
        },
        result_backend_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT,
            **sentinel_options,
        },
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        enable_utc=True,
        timezone="UTC",
        beat_max_loop_interval=1.0,
    )
    return app
