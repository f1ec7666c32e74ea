"""Which Redis keys a backup holds, and on which role's Redis each one belongs.

Every key under `grid:` is backed up, whatever wrote it (records, indexes, desired sizes,
policies and their state, placement rules, events and their indexes, metrics, and keys
added later such as an audit stream or token keys), except these, which describe live
processes and would be wrong in a restored grid:

- the leader lease and leader info: a master of the old grid, which is not running; a
  restored lease would keep the new masters waiting for it to expire;
- agents' id locks: held by the agent processes of the old grid; restored, they would refuse
  a restarted agent its own id until they expire;
- the replication probe (a marker for WAIT) and the restore marker (written by a restore).

Celery's keys (queues `grid.master`, `grid.agent.*`, `_kombu.*`, `unacked*`, results) are
not under `grid:` and never backed up: queued tasks are moments of the old grid, and the
level-triggered master re-derives every task from the restored state. Heartbeat times
(`grid:heartbeats`) are kept: the health pass finds agents through them, so a restored agent
that never comes back is marked offline and its nodes are replaced.
"""

from __future__ import annotations

from grid.core import naming

PATTERN = f"{naming.PREFIX}:*"

_NAMED = {
    naming.leader_key(): "the leader lease of a master of the backed-up grid",
    naming.leader_info_key(): "the leader info of a master of the backed-up grid",
    naming.replication_probe_key(): "a marker for WAIT",
    naming.restore_key(): "the marker of a restore",
}


def exclusion(key: str) -> str | None:
    """Why `key` is left out of backups (and untouched by a restore), or None."""
    if not key.startswith(f"{naming.PREFIX}:"):
        return "not a Grid key"
    if key in _NAMED:
        return _NAMED[key]
    if naming.is_agent_lock(key):
        return "the id lock of a live agent process"
    return None


def role_of(key: str) -> str:
    """The role a key belongs to by its name (when state and events share one Redis)."""
    return "events" if naming.in_events_role(key) else "state"
