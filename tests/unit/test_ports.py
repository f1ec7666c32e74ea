"""Host port allocation: free ports, never handed out twice, optionally from a range."""

from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError

from grid.core.ports import RECENT, PortAllocator, free_port
from grid.platforms.process import ProcessConfig


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_allocator_never_repeats_a_recent_port() -> None:
    allocator = PortAllocator("127.0.0.1")
    ports = [allocator.allocate() for _ in range(40)]
    assert len(set(ports)) == len(ports)


def test_range_is_honoured_and_exhausts() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    # a three-port window around a port the kernel just showed free; skip ports in use
    low, high = base, min(base + 2, 65535)
    allocator = PortAllocator("127.0.0.1", (low, high))
    got = []
    for _ in range(high - low + 1):
        try:
            got.append(allocator.allocate())
        except OSError:
            break
    assert got and all(low <= p <= high for p in got)
    assert len(set(got)) == len(got)
    with pytest.raises(OSError, match=f"no free port in {low}-{high}"):
        for _ in range(RECENT):
            allocator.allocate()


def test_taken_port_in_range_is_skipped() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        allocator = PortAllocator("127.0.0.1", (port, port))
        with pytest.raises(OSError):
            allocator.allocate()


@pytest.mark.parametrize("bad", [(10, 5), (0, 10), (100, 70000)])
def test_bad_range_is_a_config_error(bad: tuple[int, int]) -> None:
    with pytest.raises(ValidationError, match="port_range"):
        ProcessConfig(port_range=bad)
