"""Type aliases for third-party clients (no runtime cost), and telling them apart."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import redis

if TYPE_CHECKING:
    Redis: TypeAlias = redis.Redis[str]  # every Grid client decodes responses to str
else:
    Redis = redis.Redis


def is_cluster(client: object) -> bool:
    """Whether a client (or pipeline) talks to Redis Cluster: there a pipeline refuses
    PUBLISH, and a connection belongs to one node, not to the client."""
    return isinstance(client, redis.RedisCluster)  # ClusterPipeline subclasses RedisCluster
