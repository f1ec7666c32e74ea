"""A task's events are in Redis when it returns: the runtimes' event logs are buffered (one
batch per flush interval), and a caller that has a task's result may read its events."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
FLUSH_TIMEOUT = 2.0  # with Redis away a task thread is not held longer (its events wait)


class _Logged(Protocol):
    @property
    def events(self) -> Any: ...


def events_flushed(runtime: Callable[[], _Logged]) -> Callable[[F], F]:
    """Wrap a task body: once it has run (or raised), wait for the events it emitted."""

    def decorate(body: F) -> F:
        @functools.wraps(body)
        def task(*args: Any, **kwargs: Any) -> Any:
            try:
                return body(*args, **kwargs)
            finally:
                runtime().events.flush(FLUSH_TIMEOUT)

        return task  # type: ignore[return-value]

    return decorate
