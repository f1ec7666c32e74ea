"""The `grid` CLI through click's CliRunner, on a real Redis (records written with GridState).

Exit codes and the one-line error contract go through `grid.cli.main.main`, the real entry
point (the click group alone leaves GridError to the caller).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from grid.cli.main import cli, main
from grid.core import naming
from grid.core.connection import redis_client
from grid.core.events import EVENT_TYPES, EventLog, EventType
from grid.core.rtypes import Redis
from grid.core.state import AgentRecord, GridState, NodeRecord, NodeStatus
from tests.helpers import NODE_FIELDS

AGENT_FIELDS = {
    "agent_id",
    "hostname",
    "platform",
    "max_nodes",
    "labels",
    "cost",
    "status",
    "draining",
    "last_heartbeat",
    "node_count",
    "registered_at",
    "pid",
}
EVENT_FIELDS = {"id", "type", "ts", "message", "agent_id", "node_id", "pool", "data"}


@pytest.fixture
def env(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """GRID_REDIS_URL at the test Redis, nothing else of the caller's GRID_* variables."""
    for key in list(os.environ):
        if key.startswith("GRID_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no grid.toml of the caller
    values = {"GRID_REDIS_URL": redis_url, "GRID_HOME": str(tmp_path / "home")}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def client(redis_url: str) -> Iterator[Redis]:
    c = redis_client(redis_url)
    yield c
    c.close()


@pytest.fixture
def state(client: Redis) -> GridState:
    return GridState(client)


def invoke(env: dict[str, str], *args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the real entry point in-process: (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def populate(state: GridState) -> None:
    now = time.time()
    state.register_agent(
        AgentRecord(
            agent_id="agent-1",
            hostname="h1",
            max_nodes=4,
            last_heartbeat=now,
            labels={"zone": "a"},
            cost=0.5,
        )
    )
    state.register_agent(
        AgentRecord(
            agent_id="agent-2", hostname="h2", max_nodes=4, last_heartbeat=now, status="degraded"
        )
    )
    state.create_nodes(
        [
            NodeRecord(
                node_id="default-00000001",
                agent_id="agent-1",
                status="running",
                pid=111,
                port=4001,
                endpoint="http://127.0.0.1:1",
                restart_count=2,
                created_at=now,
                started_at=now,
            ),
            NodeRecord(
                node_id="default-00000002", agent_id="agent-2", status="pending", created_at=now
            ),
            NodeRecord(
                node_id="manual-00000003",
                pool="manual",
                agent_id="agent-1",
                status="running",
                pid=333,
                port=4003,
                endpoint="http://127.0.0.1:1",
                created_at=now,
            ),
        ]
    )
    state.set_desired("default", 4)


# ---- help ---------------------------------------------------------------------------------

COMMANDS = [
    "scale",
    "spawn",
    "stop",
    "drain",
    "undrain",
    "nodes",
    "agents",
    "status",
    "events",
    "logs",
    "node-status",
    "up",
    "master",
    "agent",
    "flower",
    "backup",
]


def test_group_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "Grid runs and scales fleets of storage nodes" in result.output
    for name in COMMANDS:
        assert f"  {name}" in result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "-h"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: cli {name}")


@pytest.mark.parametrize("name", ["nodes", "agents", "status", "events", "node-status"])
def test_read_commands_offer_json(name: str) -> None:
    assert "--json" in CliRunner().invoke(cli, [name, "--help"]).output


def test_backup_list_offers_json() -> None:
    assert "--json" in CliRunner().invoke(cli, ["backup", "list", "--help"]).output


def test_events_help_lists_every_type() -> None:
    text = " ".join(CliRunner().invoke(cli, ["events", "--help"]).output.split())
    for name in EVENT_TYPES:
        assert name in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and out.startswith("grid, version ")


# ---- read commands: --json shapes ------------------------------------------------------------


def test_nodes_json(env: dict[str, str], state: GridState) -> None:
    assert json.loads(invoke(env, "nodes", "--json").stdout) == []
    populate(state)
    rows = json.loads(invoke(env, "nodes", "--json").stdout)
    assert [r["node_id"] for r in rows] == [
        "default-00000001",
        "default-00000002",
        "manual-00000003",
    ]
    for row in rows:
        assert set(row) >= NODE_FIELDS
    first = rows[0]
    assert (
        first["agent_id"],
        first["pool"],
        first["status"],
        first["pid"],
        first["port"],
        first["endpoint"],
        first["restart_count"],
    ) == ("agent-1", "default", "running", 111, 4001, "http://127.0.0.1:1", 2)
    assert rows[1]["pid"] is None
    only = json.loads(invoke(env, "nodes", "--json", "--pool", "manual").stdout)
    assert [r["node_id"] for r in only] == ["manual-00000003"]
    by_agent = json.loads(invoke(env, "nodes", "--json", "--agent", "agent-2").stdout)
    assert [r["node_id"] for r in by_agent] == ["default-00000002"]


def test_nodes_table(env: dict[str, str], state: GridState) -> None:
    assert "(none)" in invoke(env, "nodes").stdout
    populate(state)
    lines = invoke(env, "nodes").stdout.splitlines()
    assert lines[0].split() == [
        "NODE",
        "POOL",
        "AGENT",
        "STATUS",
        "PID",
        "PORT",
        "ENDPOINT",
        "RESTARTS",
        "STARTED",
    ]
    assert len(lines) == 4
    assert lines[1].split()[:8] == [
        "default-00000001",
        "default",
        "agent-1",
        "running",
        "111",
        "4001",
        "http://127.0.0.1:1",
        "2",
    ]


def test_agents_json(env: dict[str, str], state: GridState) -> None:
    populate(state)
    rows = json.loads(invoke(env, "agents", "--json").stdout)
    assert [r["agent_id"] for r in rows] == ["agent-1", "agent-2"]
    for row in rows:
        assert set(row) >= AGENT_FIELDS
    assert rows[0]["labels"] == {"zone": "a"} and rows[0]["cost"] == 0.5
    assert rows[0]["max_nodes"] == 4 and rows[1]["status"] == "degraded"
    # node counts come from the records now (the agents' last beats reported none)
    assert [r["node_count"] for r in rows] == [2, 1]
    text = invoke(env, "agents").stdout
    assert "zone=a" in text and "2/4" in text and "1/4" in text


def test_status_json(env: dict[str, str], state: GridState) -> None:
    empty = json.loads(invoke(env, "status", "--json").stdout)
    assert empty["cluster"] == "healthy" and empty["leader"] is None
    assert empty["agents"] == {"total": 0, "online": 0, "degraded": 0, "offline": 0}
    assert empty["nodes"]["total"] == 0 and empty["pools"] == {}

    populate(state)
    state.set_pool_status("default", {"shortfall": 1})
    report = json.loads(invoke(env, "status", "--json").stdout)
    assert set(report) >= {"cluster", "reason", "leader", "agents", "nodes", "pools"}
    assert report["agents"] == {"total": 2, "online": 1, "degraded": 1, "offline": 0}
    assert report["nodes"] == {
        "total": 3,
        "pending": 1,
        "starting": 0,
        "running": 2,
        "restarting": 0,
        "stopping": 0,
        "failed": 0,
        "lost": 0,
    }
    # 1 running + 1 pending of 4: half the pool present (not below half), one short
    assert report["cluster"] == "degraded"
    assert report["pools"]["default"] == {
        "desired": 4,
        "nodes": {"running": 1, "pending": 1},
        "shortfall": 1,
    }
    assert report["pools"]["manual"]["desired"] is None
    text = invoke(env, "status").stdout
    assert "cluster  degraded" in text and "1 do not fit (capacity shortfall)" in text


@pytest.mark.parametrize(
    ("desired", "agent2", "expected"),
    [
        (1, "online", "healthy"),
        (1, "degraded", "degraded"),
        (2, "online", "degraded"),
        (3, "online", "critical"),
        (4, "online", "healthy"),  # a scale-up in progress is not an outage
        (5, "online", "degraded"),
    ],
)
def test_status_cluster_state(
    env: dict[str, str], state: GridState, desired: int, agent2: str, expected: str
) -> None:
    state.register_agent(AgentRecord(agent_id="agent-1"))
    state.register_agent(AgentRecord(agent_id="agent-2", status=agent2))
    state.create_nodes([NodeRecord(node_id="default-1", agent_id="agent-1", status="running")])
    if desired >= 4:  # two more on their way and one running: 4 present
        state.create_nodes(
            [
                NodeRecord(node_id="default-2", agent_id="agent-1", status="pending"),
                NodeRecord(node_id="default-3", agent_id="agent-2", status="starting"),
                NodeRecord(node_id="default-4", agent_id="agent-2", status="running"),
            ]
        )
    if desired == 5:  # the fifth crashed and waits for its restart: degraded
        state.create_nodes(
            [NodeRecord(node_id="default-5", agent_id="agent-1", status="restarting")]
        )
    state.set_desired("default", desired)
    assert json.loads(invoke(env, "status", "--json").stdout)["cluster"] == expected


def test_events_json_filters_and_since(env: dict[str, str], client: Redis) -> None:
    log = EventLog(client)
    log.emit(EventType.SPAWN_SUCCEEDED, "n1 up", agent_id="agent-1", node_id="n1", pool="p")
    log.emit(EventType.STOP_SUCCEEDED, "n1 down", agent_id="agent-1", node_id="n1", pool="p")
    log.emit(EventType.SPAWN_SUCCEEDED, "n2 up", agent_id="agent-2", node_id="n2", pool="q")
    rows = json.loads(invoke(env, "events", "--json").stdout)
    assert [r["message"] for r in rows] == ["n1 up", "n1 down", "n2 up"]
    assert all(set(r) >= EVENT_FIELDS for r in rows)
    spawns = json.loads(invoke(env, "events", "--type", "spawn_succeeded", "--json").stdout)
    assert [r["node_id"] for r in spawns] == ["n1", "n2"]
    two = invoke(
        env,
        "events",
        "--type",
        "spawn_succeeded",
        "--type",
        "stop_succeeded",
        "--agent",
        "agent-1",
        "--json",
    )
    assert [r["type"] for r in json.loads(two.stdout)] == ["spawn_succeeded", "stop_succeeded"]
    assert len(json.loads(invoke(env, "events", "--pool", "q", "--json").stdout)) == 1
    assert len(json.loads(invoke(env, "events", "--node", "n1", "--json").stdout)) == 2
    assert len(json.loads(invoke(env, "events", "--limit", "1", "--json").stdout)) == 1
    assert len(json.loads(invoke(env, "events", "--since", "1h", "--json").stdout)) == 3
    text = invoke(env, "events").stdout.splitlines()
    assert len(text) == 3 and "spawn_succeeded" in text[0] and text[0].endswith("n1 up")


def test_events_since_excludes_older_events(env: dict[str, str], client: Redis) -> None:
    # an event from two hours ago: a stream entry with an explicit id in the past
    old_ms = int((time.time() - 7200) * 1000)
    client.xadd(
        naming.events_key(),
        {"type": "scale_requested", "ts": str(old_ms / 1000), "message": "old", "data": "{}"},
        id=f"{old_ms}-0",
    )
    EventLog(client).emit(EventType.SCALE_REQUESTED, "new")
    assert [r["message"] for r in json.loads(invoke(env, "events", "--json").stdout)] == [
        "old",
        "new",
    ]
    recent = json.loads(invoke(env, "events", "--since", "1h", "--json").stdout)
    assert [r["message"] for r in recent] == ["new"]
    recent = json.loads(invoke(env, "events", "--since", "3h", "--json").stdout)
    assert len(recent) == 2


def test_node_status_json_without_health(env: dict[str, str], state: GridState) -> None:
    populate(state)
    report = json.loads(invoke(env, "node-status", "default-00000001", "--json").stdout)
    assert set(report) >= NODE_FIELDS
    assert report["node_id"] == "default-00000001" and report["pid"] == 111
    assert report["health"] is None  # nothing answers on the recorded endpoint
    text = invoke(env, "node-status", "default-00000002").stdout
    assert "health         no answer" in text


# ---- write commands without a master ----------------------------------------------------------


def test_scale_without_master_saves_the_size(
    env: dict[str, str], state: GridState, client: Redis
) -> None:
    result = invoke(env, "scale", "--nodes", "3", "--pool", "web")
    assert result.exit_code == 0
    assert "no master is running" in result.stderr
    assert state.desired() == {"web": 3}
    (ev,) = EventLog(client).read(types={"scale_requested"})
    assert ev.pool == "web" and ev.data["desired"] == 3 and ev.data["previous"] is None
    invoke(env, "scale", "--nodes", "0", "--pool", "web")
    assert state.desired() == {"web": 0}
    assert EventLog(client).read(types={"scale_requested"})[-1].data["previous"] == 3


def test_drain_and_undrain_flag_the_agent(env: dict[str, str], state: GridState) -> None:
    state.register_agent(AgentRecord(agent_id="agent-1"))
    assert invoke(env, "undrain", "agent-1").exit_code == 0
    agent = state.agent("agent-1")
    assert agent is not None and agent.draining is False


# ---- exit codes through the real entry point ---------------------------------------------------


def snapshot(client: Redis) -> dict[str, Any]:
    return {key: client.dump(key) for key in sorted(client.keys("*"))}


BAD = [
    (["spawn", "--agent", "nope"], "unknown agent 'nope'"),
    (["stop", "nope"], "unknown node 'nope'"),
    (["logs", "nope"], "unknown node 'nope'"),
    (["node-status", "nope"], "unknown node 'nope'"),
    (["drain", "nope"], "unknown agent 'nope'"),
    (["scale", "--nodes", "-1"], "--nodes"),
    (["scale", "--nodes", "2", "--pool", "Bad_Pool"], "bad pool name"),
    (["events", "--type", "bogus"], "unknown event type 'bogus'"),
    (["events", "--since", "yesterday"], "bad duration"),
    (["nodes", "--bogus"], "--bogus"),
]


@pytest.mark.parametrize(("args", "needle"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_exit_2_one_line_nothing_changed(
    env: dict[str, str],
    state: GridState,
    client: Redis,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    needle: str,
) -> None:
    populate(state)
    before = snapshot(client)
    code, out, err = run_main(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("grid: ")
    assert needle in err
    assert snapshot(client) == before


def test_bad_setting_names_the_variable(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRID_HEARTBEAT_INTERVAL", "abc")
    code, out, err = run_main(capsys, "status")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "GRID_HEARTBEAT_INTERVAL" in err


def seed_many(state: GridState, count: int) -> None:
    """`count` nodes over three agents and two pools, every third one running."""
    state.create_nodes(
        [
            NodeRecord(
                node_id=f"n{i:04d}",
                agent_id=f"a{i % 3}",
                pool="web" if i % 2 else "db",
                status="running" if i % 3 == 0 else "pending",
                generation=i,
            )
            for i in range(count)
        ]
    )


def test_nodes_filters_and_limit(env: dict[str, str], state: GridState) -> None:
    seed_many(state, 60)
    result = invoke(env, "nodes", "--pool", "web", "--status", "running", "--json")
    got = [n["node_id"] for n in json.loads(result.stdout)]
    assert got == [f"n{i:04d}" for i in range(60) if i % 2 and i % 3 == 0]

    result = invoke(env, "nodes", "--agent", "a1", "--status", "pending", "--json")
    assert {n["agent_id"] for n in json.loads(result.stdout)} == {"a1"}
    assert len(json.loads(result.stdout)) == 20

    limited = CliRunner().invoke(cli, ["nodes", "--limit", "7", "--json"], env=env)
    assert [n["node_id"] for n in json.loads(limited.stdout)] == [f"n{i:04d}" for i in range(7)]
    assert "showing the first 7 matching nodes of 60" in limited.stderr
    everything = invoke(env, "nodes", "--limit", "0", "--json")
    assert len(json.loads(everything.stdout)) == 60


def test_status_counts_are_exact_right_after_a_change(
    env: dict[str, str], state: GridState
) -> None:
    """Counts come from the agents' indexes: a change shows at once, no master needed."""
    seed_many(state, 6)
    first = json.loads(invoke(env, "status", "--json").stdout)
    assert first["nodes"]["total"] == 6 and first["nodes"]["running"] == 2
    assert first["pools"]["db"]["nodes"] == {"pending": 2, "running": 1}
    state.update_node("a1", "n0001", status=NodeStatus.RUNNING)
    state.delete_node("a2", "n0002")
    second = json.loads(invoke(env, "status", "--json").stdout)
    assert second["nodes"]["total"] == 5 and second["nodes"]["running"] == 3
    assert second["pools"]["web"]["nodes"] == {"pending": 1, "running": 2}


def test_events_pages_back_and_forth_with_cursors(env: dict[str, str], client: Redis) -> None:
    log = EventLog(client)
    for i in range(30):
        log.emit(EventType.NODE_CRASHED if i % 3 else EventType.SPAWN_SUCCEEDED, f"#{i}")
    seen: list[str] = []
    args = ["events", "--type", "node_crashed", "--limit", "7", "--json"]
    page = json.loads(invoke(env, *args).stdout)
    while page:
        seen = [r["message"] for r in page] + seen
        page = json.loads(invoke(env, *args, "--before", page[0]["id"]).stdout)
    assert seen == [f"#{i}" for i in range(30) if i % 3]
    first = json.loads(invoke(env, "events", "--limit", "1", "--json").stdout)
    assert first[0]["message"] == "#29"
    oldest = json.loads(invoke(env, "events", "--limit", "5", "--after", "0-0", "--json").stdout)
    assert [r["message"] for r in oldest] == [f"#{i}" for i in range(5)]
    text = invoke(env, "events", "--limit", "5")
    assert f"--before {oldest[0]['id']}" not in text.stderr  # the newest page starts later
    assert "(more: grid events --before " in text.stderr
