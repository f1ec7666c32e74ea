"""The one place that builds queue names, Redis keys and labels.

Never format a key or a queue name anywhere else: every reader and writer calls these.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence

from grid.core.errors import UnsafeInputError

PREFIX = "grid"
MASTER_QUEUE = "grid.master"
DEFAULT_POOL = "default"

_ID_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

# Labels stamped on every managed workload, whatever the platform.
LABEL_MANAGED = "grid.managed"
LABEL_NODE_ID = "grid.node_id"
LABEL_AGENT_ID = "grid.agent_id"
LABEL_POOL = "grid.pool"
LABEL_GENERATION = "grid.generation"  # fencing: which placement started a workload
LABEL_PORT = "grid.port"  # where a workload listens, for adoption by a restarted agent


def valid_id(value: str) -> bool:
    """Ids are DNS-label shaped so they fit container, pod and unit names on every platform."""
    return bool(_ID_RE.fullmatch(value))  # fullmatch: "$" would accept a trailing newline


def check_id(value: object, what: str = "node id") -> str:
    """`value` if it is a valid id; UnsafeInputError otherwise (it may come from a message)."""
    if isinstance(value, str) and valid_id(value):
        return value
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise UnsafeInputError(
        f"{what} {shown} is not a valid id (1-63 of a-z, 0-9 and '-', alphanumeric at both ends)"
    )


def check_ids(values: object, what: str = "node ids") -> list[str]:
    """A list of valid ids, checked like `check_id`; anything else is UnsafeInputError."""
    if not isinstance(values, Sequence) or isinstance(values, str | bytes):
        raise UnsafeInputError(f"{what} must be a list of ids, got {type(values).__name__}")
    return [check_id(v, what.removesuffix("s")) for v in values]


def agent_queue(agent_id: str) -> str:
    return f"{PREFIX}.agent.{agent_id}"


def master_private_queue(master_id: str) -> str:
    return f"{PREFIX}.master.{master_id}"


def agent_worker_name(agent_id: str, hostname: str) -> str:
    return f"agent.{agent_id}@{hostname}"


def master_worker_name(master_id: str, hostname: str) -> str:
    return f"master.{master_id}@{hostname}"


def new_node_id(pool: str) -> str:
    return f"{pool}-{secrets.token_hex(4)}"


# ---- Redis keys -------------------------------------------------------------------------


# Keys of one agent and of the nodes placed on it share the agent's hash tag `{<agent id>}`:
# one transaction or Lua script then touches one Redis Cluster slot, and an ACL key pattern
# `grid:{<agent id>}:*` covers exactly what that agent may write.


def agent_tag(agent_id: str) -> str:
    return f"{PREFIX}:{{{agent_id}}}"


def agent_key(agent_id: str) -> str:
    return f"{agent_tag(agent_id)}:agent"


def agent_lock_key(agent_id: str) -> str:
    """Held (with a TTL) by the live process that owns an agent id."""
    return f"{agent_tag(agent_id)}:lock"


def agent_nodes_key(agent_id: str) -> str:
    """Hash node id -> "<generation>:<status>:<pool>" of every node placed on the agent: the
    per-agent index, written in the same script as each node record."""
    return f"{agent_tag(agent_id)}:nodes"


def node_key(agent_id: str, node_id: str) -> str:
    return f"{agent_tag(agent_id)}:node:{node_id}"


def agents_key() -> str:
    """Set of registered agent ids."""
    return f"{PREFIX}:agents"


def heartbeats_key() -> str:
    """Sorted set agent id -> time of its last heartbeat: the health pass reads only the
    stale end."""
    return f"{PREFIX}:heartbeats"


def unwell_agents_key() -> str:
    """Set of agents whose status is not online (the health pass re-checks only these)."""
    return f"{PREFIX}:unwell-agents"


def node_agents_key() -> str:
    """Hash node id -> agent id: the catalogue of every node record, for look-ups by id."""
    return f"{PREFIX}:node-agents"


def changes_key() -> str:
    """Stream of (agent, node) ids whose records changed: feeds the master's in-memory view."""
    return f"{PREFIX}:changes"


def pools_key() -> str:
    """Hash pool -> desired size."""
    return f"{PREFIX}:pools"


def pool_status_key() -> str:
    """Hash pool -> JSON of the last reconcile outcome (shortfall and so on)."""
    return f"{PREFIX}:pool-status"


# The event log's keys share the hash tag {events}: its scripts touch the stream and its
# indexes together, so on Redis Cluster they must live in one slot.
EVENTS_TAG = "{events}"


def events_key() -> str:
    """The event stream: every stored event, oldest first."""
    return f"{PREFIX}:{EVENTS_TAG}:stream"


def events_index_key(dimension: str, value: str) -> str:
    """Index stream of the events whose `dimension` is `value` (an event type) or hashes to
    bucket `value` (agent, node, pool)."""
    return f"{PREFIX}:{EVENTS_TAG}:ix:{dimension}:{value}"


# The keys of the events role (the event log and the metrics store); every other key of
# Grid's belongs to the state role. Backups use it to put a key back on its role's Redis.
EVENTS_ROLE_PREFIXES = (f"{PREFIX}:{EVENTS_TAG}:", f"{PREFIX}:m:")


def in_events_role(key: str) -> bool:
    return key.startswith(EVENTS_ROLE_PREFIXES)


def events_live_channel() -> str:
    """Pub/sub channel of events published live and not stored (heartbeats)."""
    return f"{PREFIX}:events:live"


def leader_key() -> str:
    return f"{PREFIX}:leader"


def leader_info_key() -> str:
    """Hash describing the current leader (master id, since, pages URL)."""
    return f"{PREFIX}:leader-info"


def is_agent_lock(key: str) -> bool:
    """Whether `key` is some agent's id lock (`agent_lock_key`)."""
    tag, sep, rest = key.partition("}")
    return bool(sep) and tag.startswith(f"{PREFIX}:{{") and rest == ":lock"


def restore_key() -> str:
    """Hash describing the last restore of a backup into this Redis (checksum, status)."""
    return f"{PREFIX}:restore"


def cluster_state_key() -> str:
    return f"{PREFIX}:cluster-state"


def generation_key() -> str:
    """Counter that hands out fencing generations for node records."""
    return f"{PREFIX}:generation"


def policies_key() -> str:
    """Hash pool -> policy JSON."""
    return f"{PREFIX}:policies"


def policy_state_key(pool: str) -> str:
    """Hash with the autoscaler's memory for a pool (last scale times, last decision)."""
    return f"{PREFIX}:policy-state:{pool}"


def decisions_key(pool: str) -> str:
    return f"{PREFIX}:decisions:{pool}"


def pool_metrics_key(pool: str, metric: str) -> str:
    """Sorted set of per-tick pool aggregates of one metric."""
    return f"{PREFIX}:m:pool:{pool}:{metric}"


def pool_metric_names_key(pool: str) -> str:
    return f"{PREFIX}:m:names:{pool}"  # not under m:pool:<pool>: a metric may be named "names"


def node_samples_key(node_id: str) -> str:
    """Sorted set of one node's samples (score = unix time, member = JSON of every metric)."""
    return f"{PREFIX}:m:node:{node_id}"


def pool_history_key(pool: str, metric: str) -> str:
    """Sorted set of sealed per-minute pool totals of one metric (score = minute start)."""
    return f"{PREFIX}:m:hist:{pool}:{metric}"


def pool_minute_key(pool: str, metric: str, minute: int) -> str:
    """Hash of one minute's per-source running totals of one pool metric, until sealed."""
    return f"{PREFIX}:m:hist:{pool}:{metric}:{minute}"


def metric_pools_key() -> str:
    """Set of pools that have metrics."""
    return f"{PREFIX}:m:pools"


def replication_probe_key() -> str:
    """A short-lived key written right before WAIT, so WAIT covers the writes before it. Its
    hash tag is the pools key itself: on Redis Cluster it lands on the shard holding the
    desired sizes, the writes WAIT is meant to confirm."""
    return f"{PREFIX}:{{{pools_key()}}}:replication-probe"


def node_labels(node_id: str, agent_id: str, pool: str) -> dict[str, str]:
    return {
        LABEL_MANAGED: "true",
        LABEL_NODE_ID: node_id,
        LABEL_AGENT_ID: agent_id,
        LABEL_POOL: pool,
    }
