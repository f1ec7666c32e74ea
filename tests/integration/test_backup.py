"""`grid backup create|list|restore` on real Redis servers through the real `grid` script:
every type round-trips with its TTL into a fresh Redis, bad files are refused with Redis
untouched, `--force` replaces, a restore can be run again, retention keeps exactly N."""

from __future__ import annotations

import gzip
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from grid.core import naming
from grid.core.backup.files import is_scheduled, list_backups, rotate, verify
from grid.core.backup.service import create_backup
from grid.core.ports import free_port
from grid.core.redis_server import EmbeddedRedis
from grid.core.settings import load_settings
from tests.backup_support import fresh_redis, grid_cli, raw, snapshot, ttls
from tests.helpers import wait_for

TTL_MS = 600_000


def fill(url: str) -> None:
    """One key of every type (binary values included), TTLs, streams with explicit ids, a
    trimmed and an empty stream, a consumer group; and keys a backup must leave out."""
    r = raw(url)
    r.set("grid:generation", 41)
    r.set("grid:bin", b"\xff\x00\xfe binary")
    r.pexpire("grid:bin", TTL_MS)
    r.rpush("grid:list", "a", "b", "a", b"\x80")
    r.sadd("grid:agents", "agent-1", "agent-2")
    r.zadd("grid:heartbeats", {"agent-1": 1712345678.25, "agent-2": float("inf"), "x": -0.1})
    r.hset("grid:pools", mapping={"default": 3, "web": 0})
    r.hset("grid:{agent-1}:node:default-1", mapping={"status": "running", "blob": b"\xc3"})
    r.pexpire("grid:{agent-1}:node:default-1", TTL_MS)
    stream = naming.events_key()
    ms = int(time.time() * 1000)  # recent: the event log trims entries past its retention
    for i in range(2500):  # more than one page of entries
        r.xadd(stream, {"type": "scale_requested", "i": str(i)}, id=f"{ms}-{i}")
    r.xgroup_create(stream, "readers", id=f"{ms}-7")
    r.xadd("grid:trimmed", {"a": "1"}, id="5-1")
    r.xadd("grid:trimmed", {"a": "2"}, id="9-3")
    r.xdel("grid:trimmed", "9-3")  # last id 9-3 beyond the last entry
    r.xadd("grid:empty", {"a": "1"}, id="7-0")
    r.xdel("grid:empty", "7-0")
    r.set(naming.leader_key(), "old-master|token", px=TTL_MS)
    r.hset(naming.leader_info_key(), "master_id", "old-master")
    r.set(naming.agent_lock_key("agent-1"), "host|1|x", px=TTL_MS)
    r.rpush("grid.master", "a queued Celery task")
    r.set("other:key", "not Grid's")
    r.close()


LEFT_OUT = {
    naming.leader_key().encode(),
    naming.leader_info_key().encode(),
    naming.agent_lock_key("agent-1").encode(),
}


def many(url: str, count: int) -> None:
    """`count` node-record-like hashes, spread over 50 agents' hash tags."""
    r = raw(url)
    pipe = r.pipeline(transaction=False)
    for i in range(count):
        pipe.hset(f"grid:{{a{i % 50}}}:node:n{i}", mapping={"status": "running", "i": i})
    pipe.execute()
    r.close()


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("GRID_")},
        "GRID_REDIS_URL": redis_url,
        "GRID_HOME": str(tmp_path / "home"),
    }


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with fresh_redis(tmp_path / "fresh") as server:
        yield server


def make_backup(env: dict[str, str], folder: Path) -> Path:
    made = grid_cli(env, "backup", "create", "--to", str(folder))
    assert made.returncode == 0, made.stderr
    assert made.stderr.splitlines()[-1].startswith("backup: ")  # "backup: N keys (...) in Ts"
    path = Path(made.stdout.strip())
    assert path.parent == folder and path.is_file()
    return path


def test_every_type_round_trips_with_ttls_into_a_fresh_redis(
    redis_url: str, env: dict[str, str], fresh: EmbeddedRedis, tmp_path: Path
) -> None:
    fill(redis_url)
    before = snapshot(redis_url)
    path = make_backup(env, tmp_path / "backups")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    restored = grid_cli({**env, "GRID_REDIS_URL": fresh.url}, "backup", "restore", str(path))
    assert restored.returncode == 0, restored.stderr

    after = snapshot(fresh.url)
    after.pop(naming.restore_key().encode())
    events = after.pop(naming.events_key().encode())
    expected = {k: v for k, v in before.items() if k not in LEFT_OUT}
    expected_events = expected.pop(naming.events_key().encode())
    # the restore appends its own backup_restored event (and its index keys) after the rest
    for key in [k for k in after if k not in expected]:
        assert b":ix:" in key, f"unexpected key {key!r}"
        after.pop(key)
    assert after == expected
    entries, last_id, groups = events[1]
    assert entries[:-1] == expected_events[1][0]  # same ids, same fields, same order
    assert json.loads(entries[-1][1][b"data"])["keys"] == len(expected) + 1
    assert groups == expected_events[1][2] and groups[0][0] == b"readers"
    assert after[b"grid:trimmed"][1][1] == b"9-3" and after[b"grid:empty"][1][1] == b"7-0"
    assert not (LEFT_OUT & set(snapshot(fresh.url)))

    kept = ttls(fresh.url)
    for key in (b"grid:bin", b"grid:{agent-1}:node:default-1"):
        assert 0 < kept[key] <= TTL_MS
    assert kept[b"grid:pools"] == -1


def test_list_shows_backups_with_json(env: dict[str, str], redis_url: str, tmp_path: Path) -> None:
    fill(redis_url)
    folder = tmp_path / "home" / "backups"  # the default folder: <GRID_HOME>/backups
    made = grid_cli(env, "backup", "create")
    assert made.returncode == 0, made.stderr
    assert Path(made.stdout.strip()).parent == folder
    (folder / "notes.txt").write_text("not a backup")
    listed = grid_cli(env, "backup", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == [Path(made.stdout.strip()).name]
    row = rows[0]
    assert row["format"] == "grid-backup" and row["version"] == 1 and row["trigger"] == "manual"
    assert row["keys"]["events"] == 1 and row["keys"]["state"] == len(snapshot(redis_url)) - 4
    assert row["source"]["state"] == redis_url
    table = grid_cli(env, "backup", "list")
    assert row["name"] in table.stdout and "manual" in table.stdout


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _flipped(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _edited_value(path: Path) -> None:
    """Valid gzip, one value changed: only the checksum tells."""
    text = gzip.decompress(path.read_bytes()).replace(b'"default","3"', b'"default","9"', 1)
    path.write_bytes(gzip.compress(text))


def _line_dropped(path: Path) -> None:
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    path.write_bytes(gzip.compress(b"".join(lines[:-1])))


def _other_version(path: Path) -> None:
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    header = json.loads(lines[0])
    header["version"] = 2
    path.write_bytes(gzip.compress(json.dumps(header).encode() + b"\n" + b"".join(lines[1:])))


def _not_gzip(path: Path) -> None:
    path.write_text("hello\n")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


BAD = {
    "truncated": (_truncated, "truncated"),
    "flipped byte": (_flipped, "corrupt"),
    "edited value": (_edited_value, "SHA-256"),
    "dropped line": (_line_dropped, "SHA-256"),
    "other version": (_other_version, "version 2 is not supported"),
    "not gzip": (_not_gzip, "corrupt"),
    "empty": (_empty, "not a Grid backup"),
}


@pytest.mark.parametrize("damage", sorted(BAD))
@pytest.mark.parametrize("force", [False, True])
def test_a_bad_backup_is_refused_and_redis_is_untouched(
    damage: str,
    force: bool,
    redis_url: str,
    env: dict[str, str],
    fresh: EmbeddedRedis,
    tmp_path: Path,
) -> None:
    fill(redis_url)
    path = make_backup(env, tmp_path / "backups")
    make, words = BAD[damage]
    make(path)
    target = raw(fresh.url)
    target.set("grid:pools", "the target's own")
    target.set("unrelated", "1")
    before = snapshot(fresh.url, "*")
    args = ["backup", "restore", str(path), *(["--force"] if force else [])]
    refused = grid_cli({**env, "GRID_REDIS_URL": fresh.url}, *args)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("grid: ") and words in lines[0], lines
    assert snapshot(fresh.url, "*") == before
    target.close()


@pytest.mark.parametrize("where", ["missing", "folder"])
def test_a_missing_backup_is_one_line(where: str, env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "nothing.jsonl.gz"
    if where == "folder":
        path.mkdir()
    refused = grid_cli(env, "backup", "restore", str(path))
    assert refused.returncode == 2
    assert refused.stderr.startswith("grid: ") and len(refused.stderr.splitlines()) == 1


def test_force_replaces_the_grid_keys_and_a_rerun_gives_the_same(
    redis_url: str, env: dict[str, str], fresh: EmbeddedRedis, tmp_path: Path
) -> None:
    fill(redis_url)
    path = make_backup(env, tmp_path / "backups")
    target = raw(fresh.url)
    target.hset("grid:pools", "target-only", 5)
    target.set("grid:target-only", "x")
    target.set(naming.leader_key(), "live-master|t", px=TTL_MS)
    target.set("unrelated", "kept")
    fresh_env = {**env, "GRID_REDIS_URL": fresh.url}

    refused = grid_cli(fresh_env, "backup", "restore", str(path))
    assert refused.returncode == 2
    assert "already holds 2 Grid key(s)" in refused.stderr and "--force" in refused.stderr
    assert target.get("grid:target-only") == b"x"

    forced = grid_cli(fresh_env, "backup", "restore", str(path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "2 keys replaced" in forced.stdout
    assert target.exists("grid:target-only") == 0
    assert target.hgetall("grid:pools") == {b"default": b"3", b"web": b"0"}
    assert target.get(naming.leader_key()) == b"live-master|t"  # a live lease is not Grid state
    assert target.get("unrelated") == b"kept"
    first = snapshot(fresh.url)

    again = grid_cli(fresh_env, "backup", "restore", str(path), "--force")
    assert again.returncode == 0, again.stderr
    second = snapshot(fresh.url)
    events = naming.events_key().encode()
    # the same keys and values; only the backup_restored event of each run differs
    assert {k: v for k, v in first.items() if b"{events}" not in k and k != b"grid:restore"} == {
        k: v for k, v in second.items() if b"{events}" not in k and k != b"grid:restore"
    }
    assert second[events][1][0][:-1] == first[events][1][0][:-1]
    target.close()


def test_an_interrupted_restore_is_finished_by_running_it_again(
    redis_url: str, env: dict[str, str], fresh: EmbeddedRedis, tmp_path: Path
) -> None:
    """A restore killed halfway (SIGKILL of the real process) leaves the target marked;
    the same restore, without --force, finishes it; another backup is still refused."""
    many(redis_url, 60_000)
    path = make_backup(env, tmp_path / "backups")
    fresh_env = {**env, "GRID_REDIS_URL": fresh.url}
    target = raw(fresh.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "grid.cli.main", "backup", "restore", str(path)],
        env=fresh_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: target.dbsize() > 1000, 60, interval=0.005, what="a restore under way")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert target.hget(naming.restore_key(), "status") == b"running"
    assert 0 < target.dbsize() < 60_001

    resumed = grid_cli(fresh_env, "backup", "restore", str(path))
    assert resumed.returncode == 0, resumed.stderr
    assert "an interrupted restore finished" in resumed.stdout
    assert resumed.stdout.startswith(f"restored {60_000} keys from {path.name}")
    assert target.hget(naming.restore_key(), "status") == b"done"
    assert snapshot(fresh.url, "grid:{a*") == snapshot(redis_url, "grid:{a*")

    other = make_backup(env, tmp_path / "other")
    refused = grid_cli(fresh_env, "backup", "restore", str(other))
    assert refused.returncode == 2 and "--force" in refused.stderr
    target.close()


def test_retention_keeps_exactly_the_newest_scheduled_backups(
    redis_url: str, tmp_path: Path
) -> None:
    fill(redis_url)
    settings = load_settings(redis_url=redis_url)
    folder = tmp_path / "backups"
    manual = create_backup(settings, folder, trigger="manual").path
    made = [create_backup(settings, folder, trigger="scheduled").path for _ in range(5)]
    stale = folder / ".grid-backup-crashed.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))
    removed = rotate(folder, keep=2)
    assert sorted(removed) == sorted([*made[:3], stale])
    names = [b.path for b in list_backups(folder)]
    assert names == sorted([manual, *made[3:]])  # hand-made backups are never rotated
    assert [is_scheduled(p.name) for p in names].count(True) == 2
    for path in names:
        assert verify(path).total_keys == len(snapshot(redis_url)) - 3


def test_a_redis_that_does_not_answer_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    gone = {**env, "GRID_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    made = grid_cli(gone, "backup", "create", "--to", str(tmp_path / "b"))
    assert made.returncode == 2 and made.stderr.startswith("grid: cannot reach Redis")
    assert not (tmp_path / "b").exists()


def test_a_folder_that_cannot_be_made_is_one_line(
    env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    fill(redis_url)
    (tmp_path / "file").write_text("a file, not a folder")
    made = grid_cli(env, "backup", "create", "--to", str(tmp_path / "file" / "backups"))
    assert made.returncode == 2, made.stderr
    assert made.stderr.startswith("grid: cannot write a backup in ")
    assert len(made.stderr.splitlines()) == 1


def test_help_explains(env: dict[str, str]) -> None:
    for args in (["backup"], ["backup", "create"], ["backup", "list"], ["backup", "restore"]):
        shown = grid_cli(env, *args, "--help")
        assert shown.returncode == 0
    restore_help = grid_cli(env, "backup", "restore", "--help").stdout
    assert "--force" in restore_help and "exit 2" in restore_help


def test_a_backup_killed_midway_leaves_no_file_that_looks_whole(
    redis_url: str, env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL of a real `grid backup create` while it writes: only a hidden temporary file
    is left, which `list` ignores and the rotation deletes once it is stale."""
    many(redis_url, 60_000)
    folder = tmp_path / "backups"
    proc = subprocess.Popen(
        [sys.executable, "-m", "grid.cli.main", "backup", "create", "--to", str(folder)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def writing() -> bool:
        return folder.is_dir() and any(p.stat().st_size > 0 for p in folder.iterdir())

    try:
        wait_for(writing, 60, interval=0.005, what="a backup being written")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    left = list(folder.iterdir())
    assert left and all(p.name.startswith(".") and p.name.endswith(".tmp") for p in left)
    assert list_backups(folder) == []
    for p in left:
        os.utime(p, (0, 0))
    assert sorted(rotate(folder, keep=1)) == sorted(left)
    assert list(folder.iterdir()) == []
