"""The sim adapter: the shared conformance suite plus what only the simulator does
(crashes told to the watcher, the shared-endpoint mode, the host's workload listing)."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator

import pytest

from grid.platforms import create_platform
from grid.platforms.base import NodeSpec, WorkloadState, WorkloadStatus
from grid.platforms.sim import START_SLOTS, SimPlatform, sim_host
from grid.workers.agent.health import fetch, probe
from tests.e2e.conformance import MakeSpec, PlatformConformance, closing_all, spec_maker

AGENT_ID = "conf-agent"


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimPlatform]]:
    def build(agent_id: str = AGENT_ID, **config: object) -> SimPlatform:
        platform = create_platform("sim", agent_id, dict(config))
        assert isinstance(platform, SimPlatform)
        return platform

    yield from closing_all(build)


@pytest.fixture
def make_platform(make_sim: Callable[..., SimPlatform]) -> Callable[[], SimPlatform]:
    return make_sim


@pytest.fixture
def node_ids() -> Iterator[list[str]]:
    """Ids of the nodes a test may have started; removed from the host at teardown."""
    ids: list[str] = []
    yield ids
    for node_id in ids:
        sim_host().remove(AGENT_ID, node_id)


@pytest.fixture
def make_spec(node_ids: list[str]) -> MakeSpec:
    return spec_maker(node_ids, "sim", AGENT_ID)


@pytest.fixture
def bad_spec(make_spec: MakeSpec) -> NodeSpec:
    return make_spec(command=[])


class TestSimConformance(PlatformConformance):
    pass


def test_crash_tells_the_watcher_and_refuses_connections(
    make_sim: Callable[..., SimPlatform], make_spec: MakeSpec
) -> None:
    platform = make_sim()
    seen: list[tuple[str, WorkloadStatus]] = []
    platform.watch(lambda: [], lambda node_id, status: seen.append((node_id, status)))
    spec = make_spec()
    handle = platform.spawn(spec)
    assert probe(handle.endpoint) == {"status": "ok", "node_id": spec.node_id}
    assert sim_host().crash(AGENT_ID, spec.node_id)
    assert [n for n, _ in seen] == [spec.node_id]
    assert seen[0][1].state == WorkloadState.EXITED and seen[0][1].exit_code == -9
    assert platform.status(spec.node_id).state == WorkloadState.EXITED
    assert probe(handle.endpoint, timeout=0.5) is None
    assert not sim_host().crash(AGENT_ID, spec.node_id), "a dead node cannot crash again"
    again = platform.spawn(spec)  # a restart replaces the exited workload
    assert probe(again.endpoint) == {"status": "ok", "node_id": spec.node_id}
    platform.close()
    assert sim_host().crash(AGENT_ID, spec.node_id)
    assert len(seen) == 1, "a closed adapter watches nothing"


def test_agents_are_separate_machines(
    make_sim: Callable[..., SimPlatform], node_ids: list[str]
) -> None:
    """The same node id on two agents is two workloads (so a double run is visible)."""
    node_id = f"twice-{secrets.token_hex(3)}"
    one, two = make_sim("sim-one"), make_sim("sim-two")
    try:
        for platform in (one, two):
            platform.spawn(NodeSpec(node_id=node_id, agent_id=platform.agent_id, pool="p",
                                    command=["sim"]))  # fmt: skip
        assert [h.node_id for h in one.list({})] == [node_id]
        listed = json.loads(fetch(sim_host().url, "/workloads") or b"[]")
        assert sorted(r["agent_id"] for r in listed if r["node_id"] == node_id) == [
            "sim-one",
            "sim-two",
        ]
        one.stop(node_id, grace=0)
        assert one.status(node_id).state == WorkloadState.MISSING
        assert two.status(node_id).state == WorkloadState.RUNNING
    finally:
        two.stop(node_id, grace=0)


def test_shared_endpoint_uses_no_socket_per_node(
    make_sim: Callable[..., SimPlatform], make_spec: MakeSpec
) -> None:
    platform = make_sim(shared_endpoint=True)
    handles = [platform.spawn(make_spec()) for _ in range(3)]
    assert {h.endpoint for h in handles} == {sim_host().url}
    assert probe(handles[0].endpoint) == {"status": "ok", "node_id": ""}
    for handle in handles:
        platform.stop(handle.node_id, grace=0)
    assert platform.list({}) == []


def test_a_start_waits_for_a_slot_until_a_starting_node_answers(
    make_sim: Callable[..., SimPlatform], make_spec: MakeSpec
) -> None:
    """Nodes hold a start slot until their first /health: a burst of starts cannot starve
    the one serving thread."""
    platform = make_sim()
    first = [platform.spawn(make_spec()) for _ in range(START_SLOTS)]
    late: list[str] = []
    waiting = threading.Thread(target=lambda: late.append(platform.spawn(make_spec()).node_id))
    waiting.start()
    waiting.join(timeout=0.3)
    assert waiting.is_alive() and not late, "a start beyond the slots must wait"
    assert probe(first[0].endpoint) is not None  # its first answer gives its slot back
    waiting.join(timeout=5)
    assert late, "the waiting start got the slot"
    for handle in first[1:]:
        platform.stop(handle.node_id, grace=0)  # stopping a starting node frees its slot too
    assert probe(platform.spawn(make_spec()).endpoint) is not None
