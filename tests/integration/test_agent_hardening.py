"""The audit's attacks on an agent, refused: a real agent process on a real Redis.

A raw `stop_node` naming a directory outside the agent's root deletes nothing, and a node
record whose id climbs out of the root starts nothing; each is reported as a
`security_violation` event, and the agent keeps serving.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from grid.core import naming
from grid.core.celery_app import configure
from grid.core.state import NodeRecord, NodeStatus
from grid.core.tasknames import TaskName
from tests.gridproc import LocalGrid
from tests.helpers import wait_for

AGENT = "agent-1"
ESCAPE = "../../../../../escaped"


@pytest.fixture
def agent(local_grid: LocalGrid) -> LocalGrid:
    local_grid.start_agent(AGENT, 2)
    local_grid.wait_agents(AGENT)
    return local_grid


@pytest.fixture
def app(agent: LocalGrid) -> Iterator[Celery]:
    yield configure(agent.redis_url)


def violations(grid: LocalGrid, action: str) -> list[dict[str, str]]:
    """The security_violation events of one agent entry (`stop`, `spawn_many`, ...)."""
    return [
        e for e in grid.events("security_violation") if json.loads(e["data"])["action"] == action
    ]


def test_a_raw_stop_node_on_a_foreign_directory_deletes_nothing(
    agent: LocalGrid, app: Celery, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "precious").write_text("keep")
    root = agent.home / "agents" / AGENT / "nodes"
    relative = "/".join([".."] * len(root.relative_to(tmp_path).parts)) + "/victim"
    assert (root / relative).resolve() == victim  # the attack would reach it
    queue = naming.agent_queue(AGENT)
    for target in (str(victim), relative, [str(victim)]):
        app.send_task(TaskName.STOP_NODE, [target], queue=queue)
    app.send_task(TaskName.STOP_NODES, [[str(victim)]], queue=queue)
    app.send_task(TaskName.NODE_LOGS, [relative], queue=queue)

    wait_for(lambda: len(violations(agent, "stop")) >= 3, 30, what="3 refused stops")
    wait_for(lambda: violations(agent, "stop_many"), 30, what="a refused stop_many")
    wait_for(lambda: violations(agent, "logs"), 30, what="refused logs")
    assert (victim / "sub" / "precious").read_text() == "keep"
    event = violations(agent, "stop")[0]
    assert event["agent_id"] == AGENT and "not a valid id" in event["message"]
    assert agent.procs[AGENT].poll() is None, "the agent must keep running"


def test_an_escaping_node_record_runs_nothing(
    agent: LocalGrid, app: Celery, tmp_path: Path
) -> None:
    # the id itself climbs out of the root; and a well-named record whose id field does
    agent.state.create_nodes(
        [
            NodeRecord(node_id=ESCAPE, agent_id=AGENT, status=NodeStatus.PENDING, generation=1),
            NodeRecord(node_id="decoy-1", agent_id=AGENT, status=NodeStatus.PENDING, generation=2),
        ]
    )
    agent.client.hset(naming.node_key(AGENT, "decoy-1"), "node_id", ESCAPE)
    queue = naming.agent_queue(AGENT)
    app.send_task(TaskName.SPAWN_NODE, [ESCAPE], queue=queue)
    app.send_task(TaskName.SPAWN_NODE, ["decoy-1"], queue=queue)
    app.send_task(TaskName.SPAWN_NODES, [[ESCAPE, "decoy-1"]], queue=queue)

    wait_for(lambda: len(violations(agent, "spawn")) >= 2, 30, what="2 refused spawns")
    wait_for(lambda: violations(agent, "spawn_many"), 30, what="a refused spawn_many")
    messages = " ".join(e["message"] for e in violations(agent, "spawn"))
    assert "not a valid id" in messages and "the record of node decoy-1 names" in messages
    # the heartbeat pick-up sees the pending escaping record too: reported, never acted on
    wait_for(lambda: violations(agent, "pick_up"), 30, what="the pick-up refusing it")
    assert list(agent.node_processes()) == []
    escaped = (agent.home / "agents" / AGENT / "nodes" / ESCAPE).resolve()
    assert not escaped.exists()
    assert not any(tmp_path.parent.glob("escaped*"))
    assert agent.procs[AGENT].poll() is None


#: raw entries an outsider can LPUSH on a queue: not JSON, not UTF-8, JSON of the wrong shape,
#: an envelope whose body cannot be decoded
RAW_ENTRIES: tuple[bytes, ...] = (
    b"not json at all",
    b"\xff\xfe\x00garbage",
    b"[1, 2, 3]",
    b'"a string"',
    b"{}",
    b'{"properties": {"delivery_tag": "x", "body_encoding": "base64"}, "body": "!!!"}',
    b'{"properties": {"delivery_tag": "y"}, "body": "{]", "content-type": "application/json",'
    b' "content-encoding": "utf-8", "headers": {}}',
)


def test_raw_entries_on_the_agent_queue_are_dropped_and_the_worker_serves_on(
    agent: LocalGrid, app: Celery
) -> None:
    record = agent.state.agent(AGENT)
    assert record is not None
    pid = record.pid
    queue = naming.agent_queue(AGENT)
    for entry in RAW_ENTRIES:
        agent.client.lpush(queue, entry)  # type: ignore[arg-type]
    wait_for(lambda: agent.client.llen(queue) == 0, 30, what="the raw entries consumed")
    # the next task is still served, by the same worker that read the garbage
    result = app.send_task(TaskName.PING_AGENT, [0.0], queue=queue)
    assert result.get(timeout=30)["sent_at"] == 0.0
    log = agent.log(AGENT)
    assert "died" not in log and "Unrecoverable" not in log, log[-2000:]
    assert log.count("dropped an unreadable message") >= 4
    assert agent.procs[AGENT].poll() is None
    after = agent.state.agent(AGENT)
    assert after is not None and after.pid == pid
