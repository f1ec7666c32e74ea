"""Backups of a running grid, with real master and agent processes: a backup restored into
a fresh Redis brings the grid back to its desired state; the leader takes scheduled
backups and keeps the newest N; split state/events roles and a Redis Cluster state."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grid.core import naming
from grid.core.backup.files import is_scheduled, list_backups, verify
from grid.core.redis_server import EmbeddedRedis
from tests.backup_support import fresh_redis, grid_cli, raw, snapshot
from tests.gridproc import LocalGrid
from tests.helpers import wait_for
from tests.redis_cluster import running_cluster

CALM = {"GRID_DEGRADED_AFTER": "6", "GRID_OFFLINE_AFTER": "12"}
POLICY = """\
policies:
  default:
    min: 4
    max: 6
    dry_run: true
    checks:
      - name: cpu-avg
        strategy: threshold
        metric: cpu_percent
        aggregation: avg
        window: 2m
        upper: 75
        lower: 55
        scale_up: {add: 1}
        scale_down: {remove: 1}
"""


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with fresh_redis(tmp_path / "fresh") as server:
        yield server


def ok(grid: LocalGrid, *args: str) -> str:
    done = grid.cli(*args)
    assert done.returncode == 0, f"grid {' '.join(args)}: {done.stderr}"
    return done.stdout


def test_a_backup_restored_into_a_fresh_redis_brings_the_grid_back(
    redis_url: str, fresh: EmbeddedRedis, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    old = LocalGrid(redis_url, tmp_path / "old", env=CALM)
    try:
        old.start_master()
        old.start_agent("agent-1", 3)
        old.start_agent("agent-2", 3)
        old.wait_leader()
        old.wait_agents("agent-1", "agent-2")
        ok(old, "scale", "--nodes", "4", "--timeout", "90s")
        ok(old, "policy", "apply", str(policy))
        saved_nodes = {n.node_id: n.agent_id for n in old.wait_pool(4)}
        path = Path(ok(old, "backup", "create", "--to", str(tmp_path / "backups")).strip())
    finally:
        leaked = old.close()
    assert not leaked
    header = verify(path)
    assert header.keys["state"] > 0 and header.keys["events"] > 0

    new = LocalGrid(fresh.url, tmp_path / "new", env=CALM)
    try:
        restored = new.cli("backup", "restore", str(path))
        assert restored.returncode == 0, restored.stderr
        assert new.state.desired() == {"default": 4}
        assert [p["pool"] for p in json.loads(ok(new, "policy", "list", "--json"))] == ["default"]
        assert new.client.get(naming.leader_key()) is None  # no lease of the old master
        new.start_master()
        new.start_agent("agent-1", 3)
        new.start_agent("agent-2", 3)
        new.wait_leader()
        running = new.wait_pool(4, timeout=90)
        # the saved records were picked up again: the same nodes, on the same agents
        assert {n.node_id: n.agent_id for n in running} == saved_nodes
        assert len(list(new.node_processes())) == 4
        history = json.loads(ok(new, "events", "--type", "scale_requested", "--json"))
        assert any(e["data"].get("desired") == 4 for e in history)
        assert new.events("backup_restored")
    finally:
        leaked = new.close()
    assert not leaked


@pytest.fixture
def scheduling(redis_url: str, tmp_path: Path) -> Iterator[LocalGrid]:
    """A master taking a backup every second, keeping two."""
    backups = {"GRID_BACKUP_INTERVAL": "1", "GRID_BACKUP_KEEP": "2"}
    grid = LocalGrid(
        redis_url,
        tmp_path / "home",
        env={**backups, "GRID_BACKUP_DIR": str(tmp_path / "scheduled")},
    )
    try:
        yield grid
    finally:
        leaked = grid.close()
    assert not leaked


def test_the_leader_takes_scheduled_backups_and_keeps_the_newest(
    scheduling: LocalGrid, tmp_path: Path
) -> None:
    grid, folder = scheduling, tmp_path / "scheduled"
    grid.client.hset(naming.pools_key(), "default", 0)
    grid.start_master()
    grid.wait_leader()

    def scheduled() -> list[Path]:
        return [b.path for b in list_backups(folder) if is_scheduled(b.path.name)]

    first = wait_for(scheduled, 15, interval=0.05, what="a first scheduled backup")
    assert verify(first[0]).trigger == "scheduled"
    wait_for(lambda: len(grid.events("backup_created")) >= 4, 30, what="four scheduled backups")
    grid.stop("master")  # no backup or rotation runs while the folder is checked
    created = [json.loads(e["data"]) for e in grid.events("backup_created")]
    assert any(c["removed"] for c in created)  # rotation deleted older ones
    kept = scheduled()
    assert len(kept) == 2
    assert all(verify(p).total_keys > 0 for p in kept)


def groups_of(store: Any) -> Any:
    return store.xinfo_groups(naming.changes_key())


def test_split_roles_and_a_cluster_state_round_trip(tmp_path: Path) -> None:
    """State on a Redis Cluster and events on their own Redis: a backup reads every primary;
    restored onto one Redis, then onto split plain servers, every key is on its role."""
    with (
        running_cluster(tmp_path / "cluster") as cluster,
        fresh_redis(tmp_path / "events") as events,
        fresh_redis(tmp_path / "one") as one,
        fresh_redis(tmp_path / "state2") as state2,
        fresh_redis(tmp_path / "events2") as events2,
    ):
        store = cluster.client()
        for i in range(300):  # keys on every shard
            store.hset(naming.agent_key(f"agent-{i}"), mapping={"agent_id": f"agent-{i}"})
        store.hset(naming.pools_key(), "default", 7)
        store.xadd(naming.changes_key(), {"a": "agent-1"}, id="3-1")
        store.xadd(naming.changes_key(), {"a": "agent-2"}, id="3-2")
        store.xdel(naming.changes_key(), "3-2")
        store.xgroup_create(naming.changes_key(), "views", id="3-1")
        changes = (store.xrange(naming.changes_key()), groups_of(store))
        ev = raw(events.url)
        ev.xadd(naming.events_key(), {"type": "scale_requested"}, id="1-1")
        ev.zadd(naming.node_samples_key("n1"), {"x": 1.0})
        ev.close()
        per_shard = Counter(
            store.keyslot(naming.agent_key(f"agent-{i}")) * 3 // 16_384 for i in range(300)
        )  # the fixture gives each primary a third of the slots
        assert len(per_shard) == 3  # every primary holds some
        base = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GRID_")},
            "GRID_HOME": str(tmp_path / "home"),
        }
        split = {
            **base,
            "GRID_REDIS_URL": events.url,
            "GRID_STATE_URL": f"redis+cluster://127.0.0.1:{cluster.ports[0]}",
            "GRID_EVENTS_URL": events.url,
        }
        made = grid_cli(split, "backup", "create", "--to", str(tmp_path / "b"))
        assert made.returncode == 0, made.stderr
        path = Path(made.stdout.strip())
        assert verify(path).keys == {"state": 302, "events": 2}

        into_one = grid_cli({**base, "GRID_REDIS_URL": one.url}, "backup", "restore", str(path))
        assert into_one.returncode == 0, into_one.stderr
        on_one = snapshot(one.url)
        assert on_one[naming.pools_key().encode()] == ("hash", {b"default": b"7"})
        assert len([k for k in on_one if k.endswith(b":agent")]) == 300

        again = grid_cli(
            {**base, "GRID_REDIS_URL": one.url, "GRID_STATE_URL": state2.url,
             "GRID_EVENTS_URL": events2.url},
            "backup", "restore", str(path),
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        on_state = set(snapshot(state2.url))
        on_events = set(snapshot(events2.url))
        assert naming.pools_key().encode() in on_state and len(on_state) == 303  # + marker
        assert {naming.events_key().encode(), naming.node_samples_key("n1").encode()} <= on_events
        assert not any(b"{events}" in k or b":m:" in k for k in on_state)
        assert not any(k.endswith(b":agent") for k in on_events)

        back = grid_cli(split, "backup", "restore", str(path), "--force")
        assert back.returncode == 0, back.stderr
        assert store.hget(naming.pools_key(), "default") == "7"
        assert store.xinfo_stream(naming.changes_key())["last-generated-id"] == "3-2"
        assert (store.xrange(naming.changes_key()), groups_of(store)) == changes
        store.close()
