"""Finding and connecting to Redis, one URL per role.

Grid talks to Redis in three roles, each with its own setting and all defaulting to
`GRID_REDIS_URL` (else the embedded server recorded in GRID_HOME):

- broker (`GRID_BROKER_URL`): Celery's broker and result backend, see `broker_url`;
- state (`GRID_STATE_URL`): records, desired sizes, policies, leases;
- events (`GRID_EVENTS_URL`): the event log and the metrics store.

`connect(settings, role)` gives the client of a role; nothing else picks a URL.

A URL is a plain redis-py URL (`redis://`, `rediss://`, `unix://`), a Redis Cluster URL
for the state and events roles (`redis+cluster://HOST:PORT` or `rediss+cluster://`, any one
node: the client discovers the rest; the broker cannot use one, as kombu has no Cluster
transport), or a Sentinel URL in the form kombu and Celery read, plus the name of the
master set:

    sentinel://[[USER]:PASSWORD@]HOST:PORT[/DB][;sentinel://HOST:PORT ...]?master_name=NAME

Credentials and database come from the first address (as kombu and Celery take them) and
are those of the Redis servers; the sentinels themselves are contacted without a password.
kombu and Celery expect `master_name` as a transport option, not in the URL: Grid moves it
there (`celery_options`), so that one URL describes one role completely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from grid.core import naming
from grid.core.errors import ConfigError, GridError, RedisUnavailableError
from grid.core.redis_server import discover
from grid.core.rtypes import Redis
from grid.core.settings import Settings

Role = Literal["broker", "state", "events"]

SENTINEL_SCHEME = "sentinel"
CLUSTER_SUFFIX = "+cluster"  # redis+cluster://, rediss+cluster://
SENTINEL_SEPARATOR = ";"
MASK = "***"


def resolve_redis_url(settings: Settings) -> str:
    """`GRID_REDIS_URL`, else the embedded server recorded in GRID_HOME."""
    if settings.redis_url:
        return settings.redis_url
    url = discover(settings.home)
    if url:
        return url
    raise RedisUnavailableError(
        f"no Redis: set GRID_REDIS_URL, or start a local grid with 'grid up' "
        f"(no running embedded server recorded in {settings.home}/)"
    )


def role_url(settings: Settings, role: Role) -> str:
    """The URL of one role: its own setting, else the grid's one Redis."""
    own = {
        "broker": settings.broker_url,
        "state": settings.state_url,
        "events": settings.events_url,
    }[role]
    return own or resolve_redis_url(settings)


def broker_url(settings: Settings) -> str:
    """The Celery broker's URL (also the result backend's); `celery_app.configure` takes it."""
    url = role_url(settings, "broker")
    if is_cluster(url):
        raise ConfigError(
            f"the Celery broker cannot run on Redis Cluster ({mask_url(url)}): kombu has no "
            "Cluster transport; set GRID_BROKER_URL to a plain or Sentinel Redis"
        )
    return url


# ---- URLs --------------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """The URL with every password replaced by `***`, for logs and error messages.

    Hand-written: kombu's `maybe_sanitize_url` costs 0.4 s of import in the CLI, and it
    handles neither `;`-separated Sentinel URLs nor a `password=` query parameter."""
    return SENTINEL_SEPARATOR.join(_mask_one(part) for part in url.split(SENTINEL_SEPARATOR))


def _mask_one(url: str) -> str:
    """Mask one URL by string surgery: a urlsplit/geturl round trip rewrites `unix:///`."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    path, qmark, query = tail.partition("?")
    if qmark:
        query = "&".join(
            f"{key}={MASK}" if key.lower() == "password" else f"{key}{eq}{value}"
            for key, eq, value in (item.partition("=") for item in query.split("&"))
        )
    return f"{scheme}://{netloc}{path}{qmark}{query}"


def is_cluster(url: str) -> bool:
    return url.split("://", 1)[0].lower().endswith(CLUSTER_SUFFIX)


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0].lower() == SENTINEL_SCHEME


@dataclass(frozen=True)
class SentinelURL:
    """A parsed Sentinel URL: where the sentinels are and which master set to ask for."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    @property
    def kombu_url(self) -> str:
        """The URL kombu's `sentinel://` transport and Celery's Sentinel backend parse."""
        auth = ""
        if self.password is not None:
            auth = f"{self.username or ''}:{self.password}@"
        elif self.username:
            auth = f"{self.username}@"
        first, *rest = (f"{SENTINEL_SCHEME}://{host}:{port}" for host, port in self.sentinels)
        first = first.replace("://", f"://{auth}", 1) + f"/{self.db}"
        return SENTINEL_SEPARATOR.join([first, *rest])


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse a Sentinel URL (module docstring); ConfigError naming the problem (masked)."""

    def bad(why: str) -> ConfigError:
        return ConfigError(f"bad Sentinel URL {mask_url(url)}: {why}")

    sentinels: list[tuple[str, int]] = []
    options: dict[str, list[str]] = {}
    first = None
    for chunk in url.split(SENTINEL_SEPARATOR):
        parts = urlsplit(chunk.strip())
        if parts.scheme.lower() != SENTINEL_SCHEME or not parts.hostname:
            raise bad(f"every address must be sentinel://HOST:PORT, got {mask_url(chunk)!r}")
        try:
            port = parts.port or 26379
        except ValueError:
            raise bad(f"bad port in {mask_url(chunk)!r}") from None
        sentinels.append((parts.hostname, port))
        for key, values in parse_qs(parts.query, keep_blank_values=True).items():
            options.setdefault(key, []).extend(values)
        first = first or parts
    assert first is not None  # split() gives at least one chunk
    unknown = sorted(set(options) - {"master_name"})
    if unknown:
        raise bad(f"unknown option(s) {', '.join(unknown)} (only master_name is read)")
    names = options.get("master_name", [])
    if len(names) != 1 or not names[0]:
        raise bad("give the master set's name once, as ?master_name=NAME")
    path = first.path.strip("/")
    if path and not path.isdigit():
        raise bad(f"the database must be a number, got {path!r}")
    return SentinelURL(
        sentinels=tuple(sentinels),
        master_name=names[0],
        db=int(path or 0),
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password is not None else None,
    )


def celery_options(url: str) -> tuple[str, dict[str, Any]]:
    """(URL for kombu and Celery, extra transport options) for a broker or backend URL."""
    if not is_sentinel(url):
        return url, {}
    target = parse_sentinel_url(url)
    return target.kombu_url, {"master_name": target.master_name}


# ---- clients -----------------------------------------------------------------------------


def _client_options(retries: int) -> dict[str, Any]:
    """What every Grid client shares: str replies, short timeouts, a few quick retries
    that ride out a Redis restart; a longer outage (a Sentinel failover takes seconds)
    surfaces as a RedisError that each caller's own loop retries."""
    return {
        "decode_responses": True,
        "socket_connect_timeout": 2,
        "socket_timeout": 10,
        "health_check_interval": 15,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }


class _SentinelConnection(SentinelManagedConnection):
    """Asks the sentinels for the master on every (re)connect.

    redis-py's own reconnects, inside a command's retries, go to the cached address of the
    old master (redis/redis-py issue #3874, open): after a failover to a hung primary that
    makes every retry time out on the old one. Here each socket connect looks it up."""

    def _connect(self) -> Any:
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        return super()._connect()  # type: ignore[misc]  # types-redis lacks this private method


def redis_client(
    url: str, retries: int = 3, max_connections: int | None = None, *, decode: bool = True
) -> Redis:
    """A client for a plain or Sentinel URL.

    On Sentinel it is redis-py's `master_for` client: every new connection asks the
    sentinels where the master is, and a connection to a demoted master (READONLY) is
    dropped, so after a failover the next retry lands on the promoted replica. On Redis
    Cluster it is redis-py's `RedisCluster`, which has the same command interface (so it
    is typed as `Redis`): Grid's scripts and transactions each stay in one slot.

    With `max_connections` (plain URLs), threads beyond it wait for a free connection (up
    to a minute) instead of failing: for processes with many threads (`grid sim`).

    `decode=False` gives replies as bytes (typed `Redis` all the same: cast it), for a
    reader that must copy values it does not understand byte for byte (backups)."""
    options = _client_options(retries)
    options["decode_responses"] = decode
    if is_cluster(url):
        scheme, rest = url.split("://", 1)
        plain = f"{scheme.removesuffix(CLUSTER_SUFFIX)}://{rest}"
        cluster_options = {k: options[k] for k in ("decode_responses", "socket_connect_timeout")}
        cluster: redis.RedisCluster[str] = redis.RedisCluster.from_url(
            plain, socket_timeout=options["socket_timeout"], **cluster_options
        )
        return cast(Redis, cluster)
    if not is_sentinel(url) and max_connections is not None:
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=60, **options
        )
        bounded: Redis = redis.Redis(connection_pool=pool, decode_responses=True)
        return bounded
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    sentinel_options = {k: options[k] for k in ("socket_connect_timeout", "socket_timeout")}
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options, **options)
    client: Redis = sentinel.master_for(
        target.master_name,
        connection_class=_SentinelConnection,
        db=target.db,
        username=target.username,
        password=target.password,
    )
    return client


def connect_url(url: str, check: bool = True) -> Redis:
    """Client for `url`; with `check`, fail now (RedisUnavailableError, exit 2) if no answer."""
    client = redis_client(url, retries=0 if check else 3)
    if check:
        try:
            client.ping()
        except redis.RedisError as exc:
            raise RedisUnavailableError(f"cannot reach Redis at {mask_url(url)}: {exc}") from None
        finally:
            client.close()
        client = redis_client(url)
    return client


def connect(settings: Settings, role: Role, check: bool = True) -> Redis:
    """Client for one role's Redis: "state" (GridState, policies) or "events" (EventLog,
    MetricsStore); "broker" only to check that Celery's Redis answers."""
    return connect_url(role_url(settings, role), check)


@dataclass(frozen=True)
class Clients:
    """The clients a runtime (master, agent) works with; the broker is Celery's own."""

    state: Redis
    events: Redis


REPLICA_WAIT_SECONDS = 5.0


def confirm_replicated(client: Redis, replicas: int, timeout: float = REPLICA_WAIT_SECONDS) -> None:
    """Block until `replicas` replicas hold every write made so far on this Redis.

    Replication is asynchronous: a write the primary acknowledged is lost if the primary
    dies before a replica has it. WAIT only covers the writes of its own connection, so a
    probe write goes first on the same connection (one pipeline): the replication stream
    is ordered, so a replica that has the probe has every earlier write of every client.
    GridError when too few replicas confirm in time."""
    if replicas <= 0:
        return
    probe = naming.replication_probe_key()
    if isinstance(client, redis.RedisCluster):  # WAIT has no key: send it to the probe's shard
        client.set(probe, "1", px=60_000)
        shard = client.get_node_from_key(probe)
        acked = int(
            client.execute_command("WAIT", replicas, int(timeout * 1000), target_nodes=shard)
        )
    else:
        pipe = client.pipeline(transaction=False)
        pipe.set(probe, "1", px=60_000)
        pipe.wait(replicas, int(timeout * 1000))
        acked = int(pipe.execute()[-1])
    if acked < replicas:
        raise GridError(
            f"written on the primary but confirmed by {acked} of {replicas} replica(s) "
            f"within {timeout:.0f}s (GRID_STATE_MIN_REPLICAS)"
        )
