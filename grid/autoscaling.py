"""Glue between the master and the autoscaler package: placement rules and the beat tick."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import redis

from grid import naming
from grid.placement import PlacementRules

if TYPE_CHECKING:
    from grid.workers.master import MasterRuntime

log = logging.getLogger(__name__)


def placement_rules(client: redis.Redis) -> dict[str, PlacementRules]:
    """Placement rules of every pool that has an applied policy with a `placement` block."""
    rules = {}
    for pool, raw in client.hgetall(naming.policies_key()).items():
        try:
            block = json.loads(raw).get("placement")
            if block:
                rules[pool] = PlacementRules(**block)
        except (ValueError, TypeError):
            log.warning("unreadable placement rules for pool %s", pool)
    return rules


def run_autoscaler(master: MasterRuntime) -> dict[str, Any]:
    return {"evaluated": 0}
