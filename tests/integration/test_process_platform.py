"""The process adapter: the shared conformance suite plus what only processes do.

Real grid-node processes; every one started here is stopped by the fixtures.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from grid.core.errors import UnsafeInputError
from grid.core.paths import OWNER_FILE
from grid.core.ports import free_port
from grid.platforms import create_platform
from grid.platforms.base import NodeSpec, WorkloadStatus
from grid.platforms.process import ProcessPlatform
from grid.workers.agent.health import wait_healthy
from tests.e2e.conformance import (
    HEALTH_TIMEOUT,
    MakeSpec,
    PlatformConformance,
    closing_all,
    spec_maker,
)
from tests.helpers import wait_for

AGENT_ID = "conf-agent"


@pytest.fixture
def make_process(tmp_path: Path) -> Iterator[Callable[..., ProcessPlatform]]:
    def build(**config: object) -> ProcessPlatform:
        platform = create_platform("process", AGENT_ID, {"root": str(tmp_path / "nodes"), **config})
        assert isinstance(platform, ProcessPlatform)
        return platform

    yield from closing_all(build)


@pytest.fixture
def make_platform(make_process: Callable[..., ProcessPlatform]) -> Callable[[], ProcessPlatform]:
    return make_process


@pytest.fixture
def node_ids(tmp_path: Path) -> Iterator[list[str]]:
    """Ids of the nodes a test may have started; a fresh adapter stops them at teardown."""
    ids: list[str] = []
    yield ids
    cleaner = create_platform("process", AGENT_ID, {"root": str(tmp_path / "nodes")})
    for node_id in ids:
        cleaner.stop(node_id, grace=1)
    cleaner.close()


@pytest.fixture
def make_spec(node_ids: list[str], grid_node_command: list[str]) -> MakeSpec:
    make = spec_maker(node_ids, "proc", AGENT_ID)
    return lambda **overrides: make(**{"command": grid_node_command, **overrides})


@pytest.fixture
def bad_spec(make_spec: MakeSpec) -> NodeSpec:
    return make_spec(command=["/nonexistent/grid-node"])


class TestProcessConformance(PlatformConformance):
    pass


def test_port_range_is_used(
    make_process: Callable[..., ProcessPlatform], make_spec: MakeSpec
) -> None:
    low = free_port()
    platform = make_process(port_range=(low, low))
    spec = make_spec()
    handle = platform.spawn(spec)
    try:
        assert handle.port == low and urlsplit(handle.endpoint).port == low
        assert wait_healthy(handle.endpoint, HEALTH_TIMEOUT) is not None
        # the only port of the range is taken now: the next spawn fails cleanly
        with pytest.raises(Exception, match="no free port"):
            platform.spawn(make_spec())
    finally:
        platform.stop(spec.node_id, grace=2)


def test_memory_limit_caps_address_space(
    make_process: Callable[..., ProcessPlatform], make_spec: MakeSpec
) -> None:
    platform = make_process()
    spec = make_spec(memory_mb=300)
    handle = platform.spawn(spec)
    try:
        assert handle.pid is not None
        limit = psutil.Process(handle.pid).rlimit(psutil.RLIMIT_AS)
        assert limit == (300 * 1024 * 1024, 300 * 1024 * 1024)
        assert wait_healthy(handle.endpoint, HEALTH_TIMEOUT) is not None
    finally:
        platform.stop(spec.node_id, grace=2)


def test_exit_is_reported_at_once_with_the_signal(
    make_process: Callable[..., ProcessPlatform], make_spec: MakeSpec
) -> None:
    platform = make_process()
    exits: list[tuple[str, WorkloadStatus]] = []
    seen = threading.Event()

    def on_exit(node_id: str, status: WorkloadStatus) -> None:
        exits.append((node_id, status))
        seen.set()

    platform.watch(lambda: [], on_exit)
    spec = make_spec()
    handle = platform.spawn(spec)
    assert handle.pid is not None and wait_healthy(handle.endpoint, HEALTH_TIMEOUT)
    os.kill(handle.pid, signal.SIGKILL)
    assert seen.wait(5), "the exit was not reported"
    assert exits == [(spec.node_id, exits[0][1])]
    assert exits[0][1].exit_code == -signal.SIGKILL and "SIGKILL" in exits[0][1].detail
    # a stop on purpose is not reported as an exit
    seen.clear()
    again = platform.spawn(make_spec(node_id="proc-again"))
    assert wait_healthy(again.endpoint, HEALTH_TIMEOUT)
    platform.stop("proc-again", grace=2)
    wait_for(lambda: not psutil.pid_exists(again.pid or -1), 5, what="the node to end")
    assert not seen.wait(0.3)


def test_stop_of_an_unknown_node_deletes_nothing(
    make_process: Callable[..., ProcessPlatform], tmp_path: Path
) -> None:
    """A folder under the root that no spawn marked (say, an operator's) survives a stop."""
    platform = make_process()
    foreign = tmp_path / "nodes" / "not-a-node"
    (foreign / "data").mkdir(parents=True)
    (foreign / "data" / "precious").write_text("keep")
    platform.stop("not-a-node", grace=0)
    assert (foreign / "data" / "precious").read_text() == "keep"


def test_a_symlink_out_of_the_root_is_refused(
    make_process: Callable[..., ProcessPlatform], make_spec: MakeSpec, tmp_path: Path
) -> None:
    """A node folder that resolves outside the root (a symlink planted there) is never used."""
    platform = make_process()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    (tmp_path / "nodes" / "planted").symlink_to(outside)
    with pytest.raises(UnsafeInputError, match="escapes its root"):
        platform.stop("planted", grace=0)
    with pytest.raises(UnsafeInputError, match="escapes its root"):
        platform.spawn(dataclasses.replace(make_spec(), node_id="planted"))
    assert sorted(p.name for p in outside.iterdir()) == ["precious"]


def test_a_stopped_node_leaves_no_folder(
    make_process: Callable[..., ProcessPlatform], make_spec: MakeSpec, tmp_path: Path
) -> None:
    """The owner mark lets stop remove what spawn made, data included."""
    platform = make_process()
    spec = make_spec()
    handle = platform.spawn(spec)
    assert wait_healthy(handle.endpoint, HEALTH_TIMEOUT) is not None
    assert (tmp_path / "nodes" / spec.node_id / OWNER_FILE).read_text() == spec.node_id
    platform.stop(spec.node_id, grace=2)
    assert not (tmp_path / "nodes" / spec.node_id).exists()


def test_the_host_setting_is_where_the_node_listens(
    make_process: Callable[..., ProcessPlatform], make_spec: MakeSpec
) -> None:
    """`host` is passed to the node (`--host`), not only written in its endpoint."""
    platform = make_process(host="127.0.0.2")  # loopback too, but not 127.0.0.1
    spec = make_spec()
    handle = platform.spawn(spec)
    try:
        assert urlsplit(handle.endpoint).hostname == "127.0.0.2"
        assert wait_healthy(handle.endpoint, HEALTH_TIMEOUT) is not None
        assert handle.pid is not None
        listening = {
            c.laddr.ip
            for c in psutil.Process(handle.pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening == {"127.0.0.2"}
    finally:
        platform.stop(spec.node_id, grace=2)
