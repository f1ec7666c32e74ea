"""Agent and master runtimes: the long-lived state behind the Celery workers."""
