"""A network partition: an agent in a namespace loses Redis, is replaced, and fences on heal."""

from __future__ import annotations

import os
import time

import psutil

from tests.chaos.conftest import GridFactory, NetNS
from tests.chaos.harness import assert_invariants
from tests.gridproc import wait_gone


def _net_ns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def test_partitioned_agent_is_replaced_and_fenced_when_the_link_returns(
    netns: NetNS, ns_redis: tuple[str, str], chaos: GridFactory
) -> None:
    host_url, ns_url = ns_redis
    grid = chaos(url=host_url)
    grid.start_master()
    grid.start_agent("agent-host")
    grid.start_agent_argv("agent-ns", netns.prefix(), "agent-ns", 10, {"GRID_REDIS_URL": ns_url})
    grid.wait_leader()
    grid.wait_agents("agent-host", "agent-ns")
    grid.scale(4)
    nodes = grid.wait_settled()
    cut_off = {n.node_id: n for n in nodes if n.agent_id == "agent-ns"}
    assert cut_off, "placement put nothing on agent-ns"
    stale = {nid: psutil.Process(n.pid) for nid, n in cut_off.items()}  # type: ignore[arg-type]
    assert all(_net_ns(p.pid) != _net_ns(os.getpid()) for p in stale.values())  # really inside
    mark = grid.mark()

    netns.cut()
    try:
        grid.wait_event("agent_offline", since=mark, agent_id="agent-ns")
        lost = grid.wait_event("node_lost", since=mark, agent_id="agent-ns", count=len(cut_off))
        assert {e.node_id for e in lost} == set(cut_off)
        healed = grid.wait_settled(timeout=30)
        assert {n.agent_id for n in healed} == {"agent-host"}
        # the cut-off agent cannot know yet: its nodes still run
        assert all(p.is_running() for p in stale.values())
        assert not grid.find_events("node_fenced", since=mark)
    finally:
        netns.heal()
        healed_at = time.time()

    back = grid.wait_event("agent_recovered", since=mark, agent_id="agent-ns", timeout=60)[0]
    fenced = grid.wait_event(
        "node_fenced", since=mark, agent_id="agent-ns", count=len(cut_off), timeout=30
    )
    assert {e.node_id for e in fenced} == set(cut_off)
    print(f"\nlink back -> stale nodes fenced {fenced[-1].ts - healed_at:.2f}s, agent online "
          f"{back.ts - healed_at:.2f}s")  # fmt: skip
    for proc in stale.values():
        wait_gone(proc.pid)
    grid.wait_agents("agent-host", "agent-ns")
    assert_invariants(grid)
