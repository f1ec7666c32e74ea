"""Type aliases for third-party clients (no runtime cost)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import redis

if TYPE_CHECKING:
    Redis: TypeAlias = redis.Redis[str]  # every Grid client decodes responses to str
else:
    Redis = redis.Redis
