"""Bad input to the real `grid` script: exit 2, one line on stderr naming the problem, and
nothing changed in Redis."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grid.core.connection import redis_client
from grid.core.events import EventLog, EventType
from grid.core.ports import free_port
from grid.core.rtypes import Redis
from grid.core.state import AgentRecord, GridState, NodeRecord
from tests.helpers import run_grid


@pytest.fixture
def client(redis_url: str) -> Iterator[Redis]:
    c = redis_client(redis_url)
    state = GridState(c)
    state.register_agent(AgentRecord(agent_id="agent-1", last_heartbeat=time.time()))
    state.create_nodes(
        [NodeRecord(node_id="default-00000001", agent_id="agent-1", status="running")]
    )
    state.set_desired("default", 1)
    EventLog(c).emit(EventType.SCALE_REQUESTED, "setup", pool="default")
    yield c
    c.close()


def snapshot(client: Redis) -> dict[str, Any]:
    return {key: client.dump(key) for key in sorted(client.keys("*"))}


def grid(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_grid(args, env, cwd)


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRID_")}
    env["GRID_HOME"] = str(home)
    return env


# (args, extra environment, what the one stderr line must say)
CASES = [
    pytest.param(["spawn", "--agent", "nope"], {}, ["unknown agent 'nope'"], id="unknown-agent"),
    pytest.param(["stop", "nope"], {}, ["unknown node 'nope'"], id="stop-unknown-node"),
    pytest.param(["logs", "nope"], {}, ["unknown node 'nope'"], id="logs-unknown-node"),
    pytest.param(["node-status", "nope"], {}, ["unknown node 'nope'"], id="status-unknown-node"),
    pytest.param(["scale", "--nodes", "-1"], {}, ["--nodes", "-1"], id="negative-n"),
    pytest.param(
        ["scale", "--nodes", "99999999999999999999999"],
        {},
        ["--nodes 99999999999999999999999", "maximum pool size 100000", "GRID_MAX_POOL_SIZE"],
        id="huge-n",
    ),
    pytest.param(
        ["scale", "--nodes", "6"],
        {"GRID_MAX_POOL_SIZE": "5"},
        ["maximum pool size 5 (GRID_MAX_POOL_SIZE)"],
        id="n-over-configured-max",
    ),
    pytest.param(
        ["agent", "--id", "x", "--platform", "nope"],
        {},
        ["--platform", "'nope'"],
        id="unknown-platform",
    ),
    pytest.param(["agent", "--id", "Bad_Id"], {}, ["bad agent id 'Bad_Id'"], id="bad-agent-id"),
    pytest.param(
        ["events", "--type", "nope"], {}, ["unknown event type 'nope'"], id="bad-event-type"
    ),
    pytest.param(
        ["events", "--since", "99999999999d"], {}, ["--since", "before 1970"], id="events-since"
    ),
    pytest.param(
        ["events", "--before", "nope"], {}, ["bad --before cursor 'nope'"], id="events-before"
    ),
    pytest.param(
        ["events", "--after", "1-2-3"], {}, ["bad --after cursor '1-2-3'"], id="events-after"
    ),
    pytest.param(
        ["events", "--follow", "--before", "1-0"],
        {},
        ["--follow and --before"],
        id="events-follow-before",
    ),
    pytest.param(
        ["status"],
        {"GRID_HEARTBEAT_INTERVAL": "abc"},
        ["GRID_HEARTBEAT_INTERVAL", "'abc'"],
        id="bad-setting",
    ),
    pytest.param(
        ["scale", "--nodes", "3"],
        {"GRID_OFFLINE_AFTER": "1"},
        ["GRID_OFFLINE_AFTER", "GRID_DEGRADED_AFTER"],
        id="inconsistent-settings",
    ),
    pytest.param(
        ["master"],
        {"GRID_HTTP_HOST": "192.0.2.1"},  # TEST-NET: no address of this machine
        ["master pages: cannot listen on 192.0.2.1:8700", "GRID_HTTP_PORT=-1"],
        id="pages-cannot-listen",
    ),
]


@pytest.mark.parametrize(("args", "extra", "needles"), CASES)
def test_bad_input(
    client: Redis,
    redis_url: str,
    tmp_path: Path,
    args: list[str],
    extra: dict[str, str],
    needles: list[str],
) -> None:
    before = snapshot(client)
    env = {**base_env(tmp_path / "home"), "GRID_REDIS_URL": redis_url, **extra}
    result = grid(args, env, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("grid: ")
    for needle in needles:
        assert needle in lines[0]
    assert result.stdout == ""
    assert snapshot(client) == before


def test_unknown_platform_in_agent_config(client: Redis, redis_url: str, tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\nid = "agent-9"\nplatform = "nope"\n')
    before = snapshot(client)
    env = {**base_env(tmp_path / "home"), "GRID_REDIS_URL": redis_url}
    result = grid(["agent", "--config", str(config)], env, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "unknown platform 'nope'" in lines[0], result.stderr
    assert snapshot(client) == before


@pytest.mark.parametrize(
    ("platform_table", "needle"),
    [
        ("port_range = [20000, 1]", "platform.port_range"),
        ("bogus = 1", "platform.bogus: extra inputs are not permitted"),
    ],
)
def test_bad_platform_settings_are_named_before_redis(
    tmp_path: Path, platform_table: str, needle: str
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nid = "agent-9"\n\n[platform]\n{platform_table}\n')
    # no Redis answers: the configuration is still judged first
    env = {**base_env(tmp_path / "home"), "GRID_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = grid(["agent", "--config", str(config)], env, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_redis_on_a_closed_port(client: Redis, tmp_path: Path) -> None:
    before = snapshot(client)
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = {**base_env(tmp_path / "home"), "GRID_REDIS_URL": url}
    for args in (["status"], ["scale", "--nodes", "2"], ["spawn", "--agent", "agent-1"]):
        result = grid(args, env, tmp_path)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and f"cannot reach Redis at {url}" in lines[0], result.stderr
    assert snapshot(client) == before


def test_no_redis_url_and_no_local_grid(client: Redis, tmp_path: Path) -> None:
    home = tmp_path / "empty-home"
    home.mkdir()
    before = snapshot(client)
    result = grid(["nodes"], base_env(home), tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "no Redis: set GRID_REDIS_URL" in lines[0] and str(home) in lines[0]
    assert list(home.iterdir()) == []  # nothing created while looking
    assert not (tmp_path / ".grid").exists()
    assert snapshot(client) == before


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00\x00", "is not UTF-8 text"),
        (None, "is a directory, not a TOML file"),
    ],
    ids=["binary", "directory"],
)
def test_agent_config_that_is_not_a_toml_file(
    client: Redis, redis_url: str, tmp_path: Path, content: bytes | None, needle: str
) -> None:
    config = tmp_path / "agent.toml"
    if content is None:
        config.mkdir()
    else:
        config.write_bytes(content)
    before = snapshot(client)
    env = {**base_env(tmp_path / "home"), "GRID_REDIS_URL": redis_url}
    result = grid(["agent", "--config", str(config)], env, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and needle in lines[0] and str(config) in lines[0], result.stderr
    assert snapshot(client) == before
