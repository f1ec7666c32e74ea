"""Every Platform subclass, present or future, has its id entries checked before its code runs."""

from __future__ import annotations

import builtins

import pytest

from grid.core.errors import UnsafeInputError
from grid.platforms.base import (
    NodeHandle,
    NodeSpec,
    Platform,
    PlatformConfig,
    WorkloadState,
    WorkloadStatus,
)


class Recording(Platform):
    """A new adapter written without any id check of its own."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__(PlatformConfig(), "agent-1")
        self.calls: builtins.list[tuple[str, str]] = []

    def spawn(self, spec: NodeSpec) -> NodeHandle:
        self.calls.append(("spawn", spec.node_id))
        return NodeHandle(spec.node_id, self.name, "ref", "http://127.0.0.1:1", 1, 0.0)

    def stop(self, node_id: str, grace: float) -> None:
        self.calls.append(("stop", node_id))

    def status(self, node_id: str) -> WorkloadStatus:
        self.calls.append(("status", node_id))
        return WorkloadStatus(WorkloadState.MISSING)

    def list(self, labels: dict[str, str]) -> builtins.list[NodeHandle]:
        return []

    def logs(self, node_id: str, lines: int = 100) -> str:
        self.calls.append(("logs", node_id))
        return ""


def spec(**changes: str) -> NodeSpec:
    values = {"node_id": "node-1", "agent_id": "agent-1", "pool": "web", **changes}
    return NodeSpec(values["node_id"], values["agent_id"], values["pool"], ["grid-node"])


@pytest.mark.parametrize("bad", ["../x", "/etc", "a/b", "", "UP"])
def test_an_unchecked_adapter_never_sees_an_unsafe_id(bad: str) -> None:
    platform = Recording()
    for field in ("node_id", "agent_id", "pool"):
        with pytest.raises(UnsafeInputError):
            platform.spawn(spec(**{field: bad}))
    with pytest.raises(UnsafeInputError):
        platform.stop(bad, 0)
    with pytest.raises(UnsafeInputError):
        platform.status(bad)
    with pytest.raises(UnsafeInputError):
        platform.logs(bad)
    with pytest.raises(UnsafeInputError):
        platform.adopt(bad)  # the base class's default
    assert platform.calls == []


def test_valid_ids_pass_through() -> None:
    platform = Recording()
    platform.spawn(spec())
    platform.stop("node-1", 0)
    platform.status("node-1")
    platform.logs("node-1", lines=5)
    platform.adopt("node-1")
    assert [c[0] for c in platform.calls] == ["spawn", "stop", "status", "logs"]
