"""Finding and connecting to Redis: `GRID_REDIS_URL`, else the embedded server in GRID_HOME."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from grid.core.errors import RedisUnavailableError
from grid.core.redis_server import discover
from grid.core.rtypes import Redis
from grid.core.settings import Settings


def resolve_redis_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    url = discover(settings.home)
    if url:
        return url
    raise RedisUnavailableError(
        f"no Redis: set GRID_REDIS_URL, or start a local grid with 'grid up' "
        f"(no running embedded server recorded in {settings.home}/)"
    )


def redis_client(url: str, retries: int = 3) -> Redis:
    """A client that rides out short outages (a Redis restart) with a few retries."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=10,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def connect(settings: Settings, check: bool = True) -> Redis:
    """Client for the grid's Redis; with `check`, fail now (exit 2) if it does not answer."""
    url = resolve_redis_url(settings)
    client = redis_client(url, retries=0 if check else 3)
    if check:
        try:
            client.ping()
        except redis.RedisError as exc:
            raise RedisUnavailableError(f"cannot reach Redis at {url}: {exc}") from None
        client = redis_client(url)
    return client
