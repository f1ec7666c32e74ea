"""Kombu's Redis transport, made to drop a queue entry it cannot read instead of dying.

Stock kombu decodes each entry it pops (`loads`) and builds its message envelope before
Celery sees anything: an entry that is not JSON, or JSON that is not an envelope, raises
out of the consumer and kills the worker ("Unrecoverable error"), so one raw `LPUSH` on an
agent's queue restarts its worker. Celery's own `on_decode_error` and `accept_content` only
cover the *body* of a well-formed envelope. Here such an entry, already popped, is logged
and dropped, and the worker goes on with the next one.
"""

from __future__ import annotations

import json
import logging
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import Message

log = logging.getLogger(__name__)


class MalformedMessageError(Exception):
    """A queue entry that is not a kombu envelope (JSON object with properties and tag)."""


_UNREADABLE = (json.JSONDecodeError, UnicodeDecodeError, MalformedMessageError)


class CheckedMessage(Message):
    """kombu's virtual message; a payload of the wrong shape is MalformedMessageError."""

    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        try:
            super().__init__(payload, channel=channel, **kwargs)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedMessageError(f"{type(exc).__name__}: {exc}") from None


def _dropped(exc: Exception) -> None:
    log.warning("dropped an unreadable message from the broker: %s", str(exc)[:200])


class _DropUnreadable:
    """Channel mixin: the two places kombu pops and decodes an entry."""

    Message = CheckedMessage

    def _brpop_read(self, **options: Any) -> bool:
        try:
            read: bool = super()._brpop_read(**options)  # type: ignore[misc]
        except _UNREADABLE as exc:
            _dropped(exc)
            raise Empty() from None
        return read

    def _get(self, queue: str) -> Any:
        try:
            return super()._get(queue)  # type: ignore[misc]
        except _UNREADABLE as exc:
            _dropped(exc)
            raise Empty() from None


class Channel(_DropUnreadable, kombu_redis.Channel):  # type: ignore[misc]
    pass


class SentinelChannel(_DropUnreadable, kombu_redis.SentinelChannel):  # type: ignore[misc]
    pass


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """`redis://` and `rediss://` (Celery's `broker_transport`)."""

    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    """`sentinel://`."""

    Channel = SentinelChannel


def transport_for(url: str) -> str:
    """The dotted path of the transport for a broker URL (by its scheme)."""
    scheme = url.split("://", 1)[0].lower()
    name = "SentinelTransport" if scheme == "sentinel" else "Transport"
    return f"{__name__}:{name}"
