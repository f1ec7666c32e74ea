"""What every Grid process shares: settings, errors, naming, records and state, events,
the Celery app, Redis connections, the embedded Redis, durations and ports."""
