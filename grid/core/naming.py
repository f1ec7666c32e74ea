"""The one place that builds queue names, Redis keys and labels.

Never format a key or a queue name anywhere else: every reader and writer calls these.
"""

from __future__ import annotations

import re
import secrets

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


def agents_key() -> str:
    return f"{PREFIX}:agents"


def agent_key(agent_id: str) -> str:
    return f"{PREFIX}:agent:{agent_id}"


def agent_lock_key(agent_id: str) -> str:
    """Held (with a TTL) by the live process that owns an agent id."""
    return f"{PREFIX}:agent:{agent_id}:lock"


def nodes_key() -> str:
    return f"{PREFIX}:nodes"


def node_key(node_id: str) -> str:
    return f"{PREFIX}:node:{node_id}"


def pools_key() -> str:
    """Hash pool -> desired size."""
    return f"{PREFIX}:pools"


def pool_status_key() -> str:
    """Hash pool -> JSON of the last reconcile outcome (shortfall and so on)."""
    return f"{PREFIX}:pool-status"


def events_key() -> str:
    return f"{PREFIX}:events"


def leader_key() -> str:
    return f"{PREFIX}:leader"


def leader_info_key() -> str:
    """Hash describing the current leader (master id, since, pages URL)."""
    return f"{PREFIX}:leader-info"


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
    """A short-lived key written right before WAIT, so WAIT covers the writes before it."""
    return f"{PREFIX}:replication-probe"


def node_labels(node_id: str, agent_id: str, pool: str) -> dict[str, str]:
    return {
        LABEL_MANAGED: "true",
        LABEL_NODE_ID: node_id,
        LABEL_AGENT_ID: agent_id,
        LABEL_POOL: pool,
    }
