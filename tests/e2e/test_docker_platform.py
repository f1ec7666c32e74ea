"""The Docker adapter against a real Docker daemon (scripts/docker-up.sh starts one).

Nodes run grid-node from this venv in the busybox test image (tests/e2e/docker_support.py)
on the host network. Every container and volume a test could create is named from a node
id the fixtures recorded, and removed at teardown whatever the test did.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import docker.errors
import pytest

from grid.core.errors import ConfigError, PlatformUnavailableError, SpawnError
from grid.core.naming import LABEL_AGENT_ID, LABEL_MANAGED, LABEL_NODE_ID, LABEL_POOL, LABEL_PORT
from grid.platforms import create_platform
from grid.platforms.base import NodeSpec, WorkloadState, WorkloadStatus
from grid.platforms.docker import DockerPlatform, published_port
from grid.workers.agent.health import wait_healthy
from tests.e2e.conformance import (
    HEALTH_TIMEOUT,
    PlatformConformance,
    closing_all,
    http_get,
    http_put,
    spec_maker,
)
from tests.e2e.docker_support import (
    NODE_UID,
    TEST_IMAGE,
    docker_client,
    docker_config,
    ensure_test_image,
)
from tests.helpers import require, wait_for

AGENT_ID = "conf-agent"
MakeDocker = Callable[..., DockerPlatform]
MakeSpec = Callable[..., NodeSpec]


@pytest.fixture(scope="session")
def client() -> Iterator[Any]:
    """A client of the daemon, with the test image present; skipped (failed in CI) if not."""
    found = docker_client()
    require(found is not None, "no docker daemon answers: run scripts/docker-up.sh")
    problem = ensure_test_image(found)
    require(problem is None, problem or "")
    yield found
    found.close()


@pytest.fixture
def node_ids(client: Any) -> Iterator[list[str]]:
    """Ids of the nodes a test may have started; their containers and volumes go at teardown."""
    ids: list[str] = []
    yield ids
    for node_id in ids:
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(f"grid-node-{node_id}").remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(f"grid-data-{node_id}").remove(force=True)


@pytest.fixture
def make_docker(client: Any) -> Iterator[MakeDocker]:
    """Build adapters for the test image (config overrides as keywords); all closed after."""

    def build(cls: type[DockerPlatform] = DockerPlatform, **overrides: Any) -> DockerPlatform:
        return cls(docker_config(**overrides), AGENT_ID)

    yield from closing_all(build)


@pytest.fixture
def make_platform(make_docker: MakeDocker) -> Callable[[], DockerPlatform]:
    return make_docker


@pytest.fixture
def make_spec(node_ids: list[str]) -> MakeSpec:
    return spec_maker(node_ids, "dock", AGENT_ID)


@pytest.fixture
def bad_spec(make_spec: MakeSpec) -> NodeSpec:
    return make_spec(image="grid-test:no-such-image")


class TestDockerConformance(PlatformConformance):
    pass


def start_healthy(platform: DockerPlatform, spec: NodeSpec) -> str:
    handle = platform.spawn(spec)
    assert wait_healthy(handle.endpoint, HEALTH_TIMEOUT) is not None, platform.logs(spec.node_id)
    return handle.endpoint


def volume_exists(client: Any, name: str) -> bool:
    try:
        client.volumes.get(name)
    except docker.errors.NotFound:
        return False
    return True


def test_registry_builds_docker_platform(client: Any) -> None:
    platform = create_platform("docker", AGENT_ID, {"image": TEST_IMAGE, "network": "host"})
    assert isinstance(platform, DockerPlatform)
    platform.close()


def test_container_carries_labels_and_limits(
    client: Any, make_docker: MakeDocker, make_spec: MakeSpec
) -> None:
    platform = make_docker()
    spec = make_spec(memory_mb=96, cpus=0.5, labels={"team": "storage"}, env={"ZONE": "a"})
    endpoint = start_healthy(platform, spec)
    attrs = client.containers.get(f"grid-node-{spec.node_id}").attrs
    labels = attrs["Config"]["Labels"]
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_NODE_ID] == spec.node_id
    assert labels[LABEL_AGENT_ID] == AGENT_ID
    assert labels[LABEL_POOL] == "conf"
    assert labels["team"] == "storage"
    assert labels[LABEL_PORT] == str(urlsplit(endpoint).port)
    assert attrs["HostConfig"]["Memory"] == 96 * 1024 * 1024
    assert attrs["HostConfig"]["NanoCpus"] == 500_000_000
    assert attrs["HostConfig"]["NetworkMode"] == "host"
    assert attrs["Config"]["Entrypoint"] == ["grid-node"]
    assert attrs["Config"]["Cmd"][-2:] == ["--node-id", spec.node_id]
    env = attrs["Config"]["Env"]
    assert "ZONE=a" in env and "PYTHONUNBUFFERED=1" in env  # the spec's and the config's
    platform.stop(spec.node_id, grace=5)


def test_volume_per_node_removed_on_stop(
    client: Any, make_docker: MakeDocker, make_spec: MakeSpec
) -> None:
    platform = make_docker()
    first, second = make_spec(), make_spec()
    for spec in (first, second):
        endpoint = start_healthy(platform, spec)
        assert http_put(endpoint, "/kv/where", spec.node_id.encode()) in (200, 201, 204)
    mounts = client.containers.get(f"grid-node-{first.node_id}").attrs["Mounts"]
    data = [m for m in mounts if m["Destination"] == "/data"]
    assert data and data[0]["Type"] == "volume" and data[0]["Name"] == f"grid-data-{first.node_id}"
    assert volume_exists(client, f"grid-data-{second.node_id}")
    platform.stop(first.node_id, grace=5)
    assert not volume_exists(client, f"grid-data-{first.node_id}")
    assert volume_exists(client, f"grid-data-{second.node_id}"), "only the node's own volume goes"
    platform.stop(second.node_id, grace=5)
    assert not volume_exists(client, f"grid-data-{second.node_id}")


def test_retained_volume_keeps_data_across_restarts(
    client: Any, make_docker: MakeDocker, make_spec: MakeSpec
) -> None:
    platform = make_docker(retain_data=True)
    spec = make_spec()
    endpoint = start_healthy(platform, spec)
    assert http_put(endpoint, "/kv/answer", b"42") in (200, 201, 204)
    platform.stop(spec.node_id, grace=5)
    assert platform.status(spec.node_id).state == WorkloadState.MISSING
    assert volume_exists(client, f"grid-data-{spec.node_id}")

    endpoint = start_healthy(platform, spec)
    assert http_get(endpoint, "/kv/answer") == (200, b"42")
    platform.stop(spec.node_id, grace=5)
    assert volume_exists(client, f"grid-data-{spec.node_id}")  # the fixture removes it


def test_node_runs_as_the_configured_user(
    client: Any, make_docker: MakeDocker, make_spec: MakeSpec
) -> None:
    platform = make_docker(user=f"{NODE_UID}:{NODE_UID}")
    spec = make_spec()
    endpoint = start_healthy(platform, spec)
    # a fresh volume takes the owner of the image's /data, so the node can write it
    assert http_put(endpoint, "/kv/mine", b"yes") in (200, 201, 204)
    container = client.containers.get(f"grid-node-{spec.node_id}")
    code, out = container.exec_run(["id", "-u"])
    assert (code, out.decode().strip()) == (0, str(NODE_UID))
    platform.stop(spec.node_id, grace=5)


def test_spawn_is_idempotent(make_docker: MakeDocker, make_spec: MakeSpec) -> None:
    platform = make_docker()
    spec = make_spec()
    first = platform.spawn(spec)
    again = platform.spawn(spec)  # Celery may deliver a spawn twice
    assert again.ref == first.ref and again.endpoint == first.endpoint
    platform.stop(spec.node_id, grace=5)


def test_spawn_replaces_an_exited_container(
    client: Any, make_docker: MakeDocker, make_spec: MakeSpec
) -> None:
    platform = make_docker()
    spec = make_spec()
    first = platform.spawn(spec)
    client.containers.get(first.ref).kill()
    wait_for(lambda: platform.status(spec.node_id).state == WorkloadState.EXITED, 10)
    second = platform.spawn(spec)  # the agent's restart after a crash
    assert second.ref != first.ref
    assert wait_healthy(second.endpoint, HEALTH_TIMEOUT) is not None
    platform.stop(spec.node_id, grace=5)


def test_watch_reports_a_kill_from_docker_events(
    client: Any, make_docker: MakeDocker, make_spec: MakeSpec
) -> None:
    class NoPolling(DockerPlatform):
        watch_interval = 3600.0  # a report within the deadline can only come from events

    platform = make_docker(NoPolling)
    spec, other = make_spec(), make_spec()
    start_healthy(platform, spec)
    start_healthy(platform, other)
    exits: queue.Queue[tuple[str, WorkloadStatus]] = queue.Queue()
    watched = [spec.node_id, other.node_id]
    platform.watch(lambda: list(watched), lambda nid, st: exits.put((nid, st)))
    killed_at = time.monotonic()
    client.containers.get(f"grid-node-{spec.node_id}").kill()
    node_id, status = exits.get(timeout=10)
    latency = time.monotonic() - killed_at
    assert node_id == spec.node_id
    assert status.state == WorkloadState.EXITED
    assert status.exit_code == 137 and "SIGKILL" in status.detail
    assert latency < 5, f"exit reported after {latency:.2f}s"

    watched.remove(other.node_id)  # the agent stops watching a node before it stops it
    platform.stop(other.node_id, grace=5)
    platform.stop(spec.node_id, grace=5)
    with pytest.raises(queue.Empty):
        exits.get(timeout=0.5)


def test_watch_reports_nodes_that_ended_before_it_started(
    client: Any, make_docker: MakeDocker, make_spec: MakeSpec
) -> None:
    platform = make_docker()
    spec = make_spec()
    handle = platform.spawn(spec)
    client.containers.get(handle.ref).kill(signal="SIGTERM")
    wait_for(lambda: platform.status(spec.node_id).state == WorkloadState.EXITED, 10)
    exits: queue.Queue[tuple[str, WorkloadStatus]] = queue.Queue()
    platform.watch(lambda: [spec.node_id], lambda nid, st: exits.put((nid, st)))
    node_id, status = exits.get(timeout=10)
    assert (node_id, status.state) == (spec.node_id, WorkloadState.EXITED)
    with pytest.raises(queue.Empty):  # reported once, not again by the event stream
        exits.get(timeout=0.5)
    platform.stop(spec.node_id, grace=0)


def test_watch_falls_back_to_polling(
    make_docker: MakeDocker, make_spec: MakeSpec, caplog: pytest.LogCaptureFixture
) -> None:
    class FastPolling(DockerPlatform):
        watch_interval = 0.1

    platform = make_docker(FastPolling, base_url="unix:///nonexistent/docker.sock")
    exits: queue.Queue[tuple[str, WorkloadStatus]] = queue.Queue()
    with caplog.at_level(logging.WARNING, logger="grid.platforms.docker"):
        platform.watch(lambda: ["dock-nowhere"], lambda nid, st: exits.put((nid, st)))
        wait_for(lambda: "polling container states" in caplog.text, 10, what="fallback log")
    # the daemon is unreachable, so polling gets no status either: nothing is reported
    with pytest.raises(queue.Empty):
        exits.get(timeout=0.5)


def test_unreachable_daemon_is_temporary(make_docker: MakeDocker, make_spec: MakeSpec) -> None:
    platform = make_docker(base_url="unix:///nonexistent/docker.sock")
    spec = make_spec()
    for call in (
        lambda: platform.spawn(spec),
        lambda: platform.status(spec.node_id),
        lambda: platform.list({}),
        lambda: platform.stop(spec.node_id, grace=0),
    ):
        with pytest.raises(PlatformUnavailableError) as err:
            call()
        assert err.value.temporary and "docker" in str(err.value)


def test_immediate_exit_fails_the_spawn_and_leaves_nothing(
    client: Any, make_docker: MakeDocker, make_spec: MakeSpec
) -> None:
    platform = make_docker(exit_check=10.0)
    spec = make_spec(command=["sh", "-c", "echo disk on fire; exit 3"])
    started = time.monotonic()
    with pytest.raises(SpawnError) as err:
        platform.spawn(spec)
    assert time.monotonic() - started < 10, "the exit is seen as it happens, not at the deadline"
    assert "exited with code 3" in str(err.value) and "disk on fire" in str(err.value)
    assert platform.status(spec.node_id).state == WorkloadState.MISSING
    assert not volume_exists(client, f"grid-data-{spec.node_id}")


def test_missing_executable_fails_the_spawn(
    client: Any, make_docker: MakeDocker, make_spec: MakeSpec
) -> None:
    platform = make_docker(exit_check=10.0)  # docker-init starts, then fails to exec it
    spec = make_spec(command=["/no/such/grid-node"])
    with pytest.raises(SpawnError) as err:
        platform.spawn(spec)
    assert "/no/such/grid-node" in str(err.value)
    assert platform.status(spec.node_id).state == WorkloadState.MISSING
    assert not volume_exists(client, f"grid-data-{spec.node_id}")


def test_bad_mount_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"platform\.mounts"):
        create_platform("docker", AGENT_ID, {"mounts": ["/src:relative"]})
    with pytest.raises(ConfigError, match=r"platform\.network"):
        create_platform("docker", AGENT_ID, {"network": "none"})


def test_published_port_reads_bridge_bindings() -> None:
    attrs = {
        "NetworkSettings": {"Ports": {"8000/tcp": [{"HostIp": "0.0.0.0", "HostPort": "49153"}]}}
    }
    assert published_port(attrs, 8000) == 49153
    assert published_port(attrs, 9000) is None
    assert published_port({"NetworkSettings": {"Ports": {"8000/tcp": None}}}, 8000) is None


@pytest.fixture
def bridge_network(client: Any) -> Iterator[str]:
    """A user-defined bridge network (the test daemon runs without the default bridge)."""
    name = f"grid-test-{int(time.time() * 1000) % 10**8}"
    network = client.networks.create(name, driver="bridge")
    yield name
    network.remove()


def test_a_bridge_network_publishes_on_loopback_only(
    client: Any, make_docker: MakeDocker, make_spec: MakeSpec, bridge_network: str
) -> None:
    """On a non-host network the node port is bound to the configured host, never to every
    interface of the machine."""
    platform = make_docker(network=bridge_network)
    spec = make_spec()
    endpoint = start_healthy(platform, spec)
    attrs = client.containers.get(f"grid-node-{spec.node_id}").attrs
    bindings = attrs["NetworkSettings"]["Ports"]["8000/tcp"]
    assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}, bindings
    assert [b["HostIp"] for b in attrs["HostConfig"]["PortBindings"]["8000/tcp"]] == ["127.0.0.1"]
    assert urlsplit(endpoint).port == int(bindings[0]["HostPort"])
    platform.stop(spec.node_id, grace=2)


def test_stop_of_an_unknown_node_removes_no_volume(
    client: Any, make_docker: MakeDocker, node_ids: list[str]
) -> None:
    """A volume named like a node's but not labelled as that node's survives a stop."""
    node_ids += ["foreign-1", "foreign-2"]  # the teardown removes the volumes
    client.volumes.create("grid-data-foreign-1")
    client.volumes.create(
        "grid-data-foreign-2", labels={LABEL_MANAGED: "true", LABEL_NODE_ID: "someone-else"}
    )
    platform = make_docker()
    platform.stop("foreign-1", grace=0)
    platform.stop("foreign-2", grace=0)
    assert volume_exists(client, "grid-data-foreign-1")
    assert volume_exists(client, "grid-data-foreign-2")
