"""The conformance suite every platform adapter passes.

A test module subclasses `PlatformConformance` and provides two fixtures:
- `make_platform()`: returns a new adapter instance for agent id `conf-agent` (called
  again to simulate an agent restart; instances share the backend);
- `make_spec(**overrides)`: returns a `NodeSpec` for a working grid-node on that platform.
and `bad_spec`: a `NodeSpec` that cannot start (missing image or command).
The fixtures must clean up every workload they could have created; `closing_all` and
`spec_maker` are the fixture bodies the Docker and Kubernetes modules share, `http_put` and
`http_get` talk to a node's key-value API.
"""

from __future__ import annotations

import dataclasses
import http.client
import secrets
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import pytest

from grid.core.errors import SpawnError, UnsafeInputError
from grid.core.naming import LABEL_AGENT_ID, LABEL_MANAGED, LABEL_NODE_ID
from grid.platforms.base import NodeSpec, Platform, WorkloadState
from grid.workers.agent.health import probe, wait_healthy
from tests.helpers import wait_for

#: ids an attacker sends: traversal, absolute paths, separators, an injected newline, a non-str
UNSAFE_IDS: tuple[object, ...] = (
    "../../../../../escaped",
    "/some/dir",
    "a/b",
    "..",
    "node-1\n",
    "Node-1",
    "",
    "x" * 64,
    ["node-1"],
)

MakePlatform = Callable[[], Platform]
MakeSpec = Callable[..., NodeSpec]
Args = ParamSpec("Args")
Adapter = TypeVar("Adapter", bound=Platform)

HEALTH_TIMEOUT = 60.0


def closing_all(build: Callable[Args, Adapter]) -> Iterator[Callable[Args, Adapter]]:
    """Body of a fixture (`yield from`): a maker of adapters by `build`, all closed after."""
    made: list[Adapter] = []

    def make(*args: Args.args, **kwargs: Args.kwargs) -> Adapter:
        platform = build(*args, **kwargs)
        made.append(platform)
        return platform

    yield make
    for platform in made:
        platform.close()


def spec_maker(node_ids: list[str], prefix: str, agent_id: str) -> MakeSpec:
    """`make_spec(**overrides)`: a grid-node in pool `conf`, its node id `<prefix>-<random>`
    unless given, recorded in `node_ids` for the teardown to remove."""

    def make(**overrides: Any) -> NodeSpec:
        fields: dict[str, Any] = {
            "node_id": f"{prefix}-{secrets.token_hex(4)}",
            "agent_id": agent_id,
            "pool": "conf",
            "command": ["grid-node"],
            **overrides,
        }
        node_ids.append(fields["node_id"])
        return NodeSpec(**fields)

    return make


def http_put(endpoint: str, path: str, body: bytes) -> int:
    """PUT `body` at `path` of a node's endpoint; the status."""
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        conn.request("PUT", path, body=body)
        return conn.getresponse().status
    finally:
        conn.close()


def http_get(endpoint: str, path: str) -> tuple[int, bytes]:
    """GET `path` of a node's endpoint; the status and body."""
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class PlatformConformance:
    def test_lifecycle(self, make_platform: MakePlatform, make_spec: MakeSpec) -> None:
        platform = make_platform()
        spec = make_spec()
        handle = platform.spawn(spec)
        try:
            assert handle.node_id == spec.node_id
            assert handle.platform == platform.name
            health = wait_healthy(handle.endpoint, HEALTH_TIMEOUT)
            assert health is not None, f"{handle.endpoint} never became healthy"
            assert health["node_id"] == spec.node_id
            assert platform.status(spec.node_id).state == WorkloadState.RUNNING

            logs = wait_for(lambda: platform.logs(spec.node_id, lines=50), 10, what="logs")
            assert spec.node_id in logs

            listed = platform.list({LABEL_NODE_ID: spec.node_id, LABEL_MANAGED: "true"})
            assert [h.node_id for h in listed] == [spec.node_id]
            assert platform.list({LABEL_AGENT_ID: "some-other-agent"}) == []
        finally:
            platform.stop(spec.node_id, grace=5)
        assert platform.status(spec.node_id).state in (WorkloadState.MISSING, WorkloadState.EXITED)
        assert platform.list({LABEL_NODE_ID: spec.node_id}) == []
        assert probe(handle.endpoint, timeout=0.5) is None
        platform.stop(spec.node_id, grace=5)  # idempotent: a second stop is no error
        platform.close()

    def test_adopt_after_recreate(self, make_platform: MakePlatform, make_spec: MakeSpec) -> None:
        first = make_platform()
        spec = make_spec()
        handle = first.spawn(spec)
        first.close()
        second = make_platform()
        try:
            assert wait_healthy(handle.endpoint, HEALTH_TIMEOUT) is not None
            adopted = second.list({LABEL_AGENT_ID: spec.agent_id, LABEL_NODE_ID: spec.node_id})
            assert [h.node_id for h in adopted] == [spec.node_id]
            assert adopted[0].endpoint == handle.endpoint
            assert second.status(spec.node_id).state == WorkloadState.RUNNING
        finally:
            second.stop(spec.node_id, grace=5)
        assert second.list({LABEL_NODE_ID: spec.node_id}) == []
        second.close()

    def test_failed_spawn_leaves_nothing(
        self, make_platform: MakePlatform, bad_spec: NodeSpec
    ) -> None:
        platform = make_platform()
        with pytest.raises(SpawnError) as err:
            platform.spawn(bad_spec)
        assert str(err.value), "the error must say what went wrong"
        assert platform.list({LABEL_NODE_ID: bad_spec.node_id}) == []
        assert platform.status(bad_spec.node_id).state == WorkloadState.MISSING
        platform.close()

    @pytest.mark.parametrize("bad", UNSAFE_IDS, ids=repr)
    def test_unsafe_ids_are_refused(
        self, make_platform: MakePlatform, make_spec: MakeSpec, bad: object
    ) -> None:
        """Every entry that takes an id refuses an unsafe one before acting on anything."""
        platform = make_platform()
        good = make_spec()
        for field in ("node_id", "agent_id", "pool"):
            changed: dict[str, Any] = {field: bad}
            with pytest.raises(UnsafeInputError):
                platform.spawn(dataclasses.replace(good, **changed))
        for call in (
            lambda: platform.stop(bad, grace=0),  # type: ignore[arg-type]
            lambda: platform.status(bad),  # type: ignore[arg-type]
            lambda: platform.logs(bad, lines=5),  # type: ignore[arg-type]
            lambda: platform.adopt(bad),  # type: ignore[arg-type]
        ):
            with pytest.raises(UnsafeInputError):
                call()
        assert platform.list({LABEL_AGENT_ID: good.agent_id}) == []
        platform.close()
