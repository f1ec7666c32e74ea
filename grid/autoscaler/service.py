"""The autoscaler service: applied policies in Redis, evaluated when due, decisions recorded.

The master's beat task calls :func:`evaluate_due_pools` every tick; it evaluates each pool
whose `evaluation_interval` has passed, records the decision (the last `keep` per pool, for
`grid policy explain`), emits a `scaling_decision` event for every evaluation - no-ops too -
and calls `set_desired` only when the size changes and the policy is not a dry run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from grid.autoscaler.engine import (
    Decision,
    MetricsSource,
    PoolState,
    collect_inputs,
    evaluate,
    next_state,
)
from grid.autoscaler.metrics import MetricsStore, as_text
from grid.autoscaler.policy import PoolPolicy
from grid.core.events import EventType
from grid.core.naming import decisions_key, policies_key, policy_state_key
from grid.core.rtypes import Redis

log = logging.getLogger(__name__)

EVENT = EventType.SCALING_DECISION
DEFAULT_KEEP = 100

# ---- policies ----------------------------------------------------------------------------


def apply_policy(client: Redis, policy: PoolPolicy) -> None:
    """Store (or replace) a pool's policy; it is evaluated at the next tick."""
    pipe = client.pipeline(transaction=False)  # global and per-pool keys: Cluster-safe
    pipe.hset(policies_key(), policy.pool, policy.to_json())
    pipe.hdel(policy_state_key(policy.pool), "last_eval")
    pipe.execute()


def remove_policy(client: Redis, pool: str) -> bool:
    """Forget a pool's policy and state (its recorded decisions stay for `explain`)."""
    pipe = client.pipeline(transaction=False)  # global and per-pool keys: Cluster-safe
    pipe.hdel(policies_key(), pool)
    pipe.delete(policy_state_key(pool))
    removed, _ = pipe.execute()
    return bool(removed)


def get_policy(client: Redis, pool: str) -> PoolPolicy | None:
    raw = client.hget(policies_key(), pool)
    return None if raw is None else PoolPolicy.from_json(raw)


def list_policies(client: Redis) -> list[PoolPolicy]:
    """Every applied policy, by pool name; a stored policy that no longer parses is skipped."""
    raw = client.hgetall(policies_key())
    out = []
    for pool, text in sorted(raw.items()):
        try:
            out.append(PoolPolicy.from_json(text))
        except ValueError as exc:
            log.error("stored policy of pool %s is invalid: %s", as_text(pool), exc)
    return out


def last_decisions(client: Redis, pool: str, n: int = 10) -> list[Decision]:
    """The pool's last `n` decisions, newest first."""
    raw = client.lrange(decisions_key(pool), 0, max(0, n - 1))
    return [Decision.from_dict(json.loads(item)) for item in raw]


# ---- state -------------------------------------------------------------------------------

_JSON_FIELDS = ("memory", "recent")


def load_state(client: Redis, pool: str) -> PoolState:
    raw = client.hgetall(policy_state_key(pool))
    data: dict[str, Any] = {}
    for key, value in raw.items():
        name = as_text(key)
        data[name] = json.loads(value) if name in _JSON_FIELDS else float(value)
    return PoolState.from_dict(data)


def _save(client: Redis, pool: str, state: PoolState, record: dict[str, Any], keep: int) -> None:
    fields = {name: json.dumps(getattr(state, name)) for name in _JSON_FIELDS}
    for name in ("last_eval", "last_up", "last_down", "last_up_step"):
        value = getattr(state, name)
        if value is not None:
            fields[name] = repr(value)
    pipe = client.pipeline(transaction=False)  # global and per-pool keys: Cluster-safe
    pipe.hset(policy_state_key(pool), mapping=fields)  # type: ignore[arg-type]
    pipe.lpush(decisions_key(pool), json.dumps(record))
    pipe.ltrim(decisions_key(pool), 0, keep - 1)
    pipe.execute()


# ---- evaluation --------------------------------------------------------------------------


def evaluate_pool(
    policy: PoolPolicy,
    current: int,
    state: PoolState,
    now: float,
    source: MetricsSource,
) -> Decision:
    """One evaluation of one pool against a metrics source, with no side effect."""
    return evaluate(policy, current, collect_inputs(source, policy, now), state, now)


def evaluate_due_pools(
    client: Redis,
    now: float,
    current_size: Callable[[str], int],
    set_desired: Callable[[str, int, str], None],
    emit: Callable[[str, dict[str, Any]], None],
    *,
    source: MetricsSource | None = None,
    keep: int = DEFAULT_KEEP,
    force: bool = False,
) -> list[Decision]:
    """Evaluate every pool whose interval is due (all of them with `force`).

    `current_size(pool)` is the pool's current desired size; `set_desired(pool, n, reason)`
    changes it; `emit(kind, payload)` records an event. A pool that fails is logged and
    recorded as a hold with `error`; the other pools are still evaluated.
    """
    metrics = source if source is not None else MetricsStore(client)
    decisions = []
    for policy in list_policies(client):
        state = load_state(client, policy.pool)
        due = state.last_eval is None or now - state.last_eval >= policy.evaluation_interval
        if not (force or due):
            continue
        decision = _run(policy, state, now, metrics, current_size, set_desired)
        record = decision.to_dict()
        _save(client, policy.pool, next_state(state, decision, decision.applied), record, keep)
        emit(EVENT, record)
        decisions.append(decision)
    return decisions


def _run(
    policy: PoolPolicy,
    state: PoolState,
    now: float,
    metrics: MetricsSource,
    current_size: Callable[[str], int],
    set_desired: Callable[[str, int, str], None],
) -> Decision:
    current = 0
    try:
        current = current_size(policy.pool)
        decision = evaluate_pool(policy, current, state, now, metrics)
    except Exception as exc:
        log.exception("autoscaler: evaluating pool %s failed", policy.pool)
        return _failed(policy, current, now, f"evaluation failed: {exc}")
    if decision.changed and not policy.dry_run:
        try:
            set_desired(policy.pool, decision.desired, decision.reason)
            decision.applied = True
        except Exception as exc:
            log.exception("autoscaler: setting pool %s to %d failed", policy.pool, decision.desired)
            decision.error = f"set_desired failed: {exc}"
    return decision


def _failed(policy: PoolPolicy, current: int, now: float, message: str) -> Decision:
    return Decision(
        pool=policy.pool, ts=now, current=current, desired=current, action="hold",
        reason=f"hold at {current}: {message}", votes=[], merged=current, merge="not merged",
        bounds={"min": policy.min, "max": policy.max, "source": "policy"}, clamps=[],
        cooldown={}, dry_run=policy.dry_run, error=message,
    )  # fmt: skip
