"""The Kubernetes adapter against the stand-in cluster (tests/e2e/k8s_standin.py).

The adapter talks to the stand-in's API server over HTTP through a kubeconfig, exactly as
to a real cluster; the stand-in's fake kubelet runs each pod's grid-node as a local process
on its own loopback pod IP. Every pod and claim a test could create is named from a node id
the fixtures recorded, and removed at teardown whatever the test did.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes import watch as watch_module

from grid.core.errors import ConfigError, PlatformUnavailableError, SpawnError
from grid.core.naming import LABEL_AGENT_ID, LABEL_MANAGED, LABEL_NODE_ID, LABEL_POOL
from grid.platforms import create_platform
from grid.platforms.base import NodeSpec, WorkloadState, WorkloadStatus
from grid.platforms.kubernetes import (
    KubernetesConfig,
    KubernetesPlatform,
    claim_name,
    pod_name,
)
from grid.workers.agent.health import wait_healthy
from tests.e2e.conformance import (
    HEALTH_TIMEOUT,
    PlatformConformance,
    closing_all,
    http_get,
    http_put,
    spec_maker,
)
from tests.e2e.k8s_standin import KubeStandin, Program, SelectorError, parse_label_selector
from tests.helpers import wait_for

AGENT_ID = "conf-agent"
NAMESPACE = "default"
MakeK8s = Callable[..., KubernetesPlatform]
watch: Any = watch_module  # the watch helper is untyped
MakeSpec = Callable[..., NodeSpec]


@pytest.fixture(scope="module")
def standin(
    tmp_path_factory: pytest.TempPathFactory, grid_node_command: list[str]
) -> Iterator[KubeStandin]:
    with KubeStandin(
        tmp_path_factory.mktemp("k8s"), programs={"grid-node": Program(grid_node_command)}
    ) as running:
        yield running


@pytest.fixture(scope="module")
def kube(standin: KubeStandin) -> Iterator[client.CoreV1Api]:
    """A plain client of the stand-in, to look at what the API server really stores."""
    cfg = client.Configuration()
    loader: Any = config  # the config loaders are untyped
    loader.load_kube_config(str(standin.kubeconfig), client_configuration=cfg)
    api: Any = client.ApiClient(cfg)
    yield client.CoreV1Api(api)
    api.close()


def raw(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


def read_pod(kube: client.CoreV1Api, node_id: str) -> dict[str, Any] | None:
    try:
        return raw(kube.read_namespaced_pod(pod_name(node_id), NAMESPACE, _preload_content=False))
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def read_claim(kube: client.CoreV1Api, node_id: str) -> dict[str, Any] | None:
    try:
        return raw(
            kube.read_namespaced_persistent_volume_claim(
                claim_name(node_id), NAMESPACE, _preload_content=False
            )
        )
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


@pytest.fixture
def node_ids(kube: client.CoreV1Api) -> Iterator[list[str]]:
    """Ids of the nodes a test may have started; their pods and claims go at teardown."""
    ids: list[str] = []
    yield ids
    for node_id in ids:
        with contextlib.suppress(client.ApiException):
            kube.delete_namespaced_pod(
                pod_name(node_id), NAMESPACE, grace_period_seconds=0, _preload_content=False
            )
        with contextlib.suppress(client.ApiException):
            kube.delete_namespaced_persistent_volume_claim(
                claim_name(node_id), NAMESPACE, _preload_content=False
            )

    def gone() -> bool:
        return all(read_pod(kube, n) is None and read_claim(kube, n) is None for n in ids)

    wait_for(gone, 30, what=f"pods and claims of {ids} gone")


@pytest.fixture
def make_k8s(standin: KubeStandin) -> Iterator[MakeK8s]:
    """Build adapters on the stand-in (config overrides as keywords); all closed after."""

    def build(**overrides: Any) -> KubernetesPlatform:
        settings: dict[str, Any] = {"kubeconfig": str(standin.kubeconfig), "start_timeout": 30}
        return KubernetesPlatform(KubernetesConfig(**{**settings, **overrides}), AGENT_ID)

    yield from closing_all(build)


@pytest.fixture
def make_platform(make_k8s: MakeK8s) -> Callable[[], KubernetesPlatform]:
    return lambda: make_k8s()


@pytest.fixture
def make_spec(node_ids: list[str]) -> MakeSpec:
    return spec_maker(node_ids, "k8s", AGENT_ID)


@pytest.fixture
def bad_spec(make_spec: MakeSpec) -> NodeSpec:
    return make_spec(image="grid:no-such-tag")


class TestKubernetesConformance(PlatformConformance):
    pass


# ---- what the API server stores ------------------------------------------------------------


def test_pod_manifest_as_stored(
    make_k8s: MakeK8s, make_spec: MakeSpec, kube: client.CoreV1Api
) -> None:
    platform = make_k8s()
    spec = make_spec(memory_mb=96, cpus=0.5, env={"GRID_TEST": "yes"}, labels={"team": "storage"})
    handle = platform.spawn(spec)
    pod = read_pod(kube, spec.node_id)
    assert pod is not None
    meta, pod_spec = pod["metadata"], pod["spec"]
    assert meta["name"] == f"grid-{spec.node_id}"
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    labels = meta["labels"]
    assert labels["app.kubernetes.io/name"] == "grid-node"
    assert labels["app.kubernetes.io/instance"] == spec.node_id
    assert labels["app.kubernetes.io/managed-by"] == "grid"
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_NODE_ID] == spec.node_id
    assert labels[LABEL_AGENT_ID] == AGENT_ID
    assert labels[LABEL_POOL] == "conf"
    assert labels["team"] == "storage"
    assert handle.labels == labels
    assert pod_spec["restartPolicy"] == "Never"
    (container,) = pod_spec["containers"]
    quantities = {"memory": "96Mi", "cpu": "500m"}
    assert container["resources"] == {"requests": quantities, "limits": quantities}
    probe = container["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/health", 8080)
    assert container["command"] == [
        "grid-node",
        "--port",
        "8080",
        "--data-dir",
        "/data",
        "--node-id",
        spec.node_id,
        "--host",
        "0.0.0.0",
    ]
    assert {"name": "GRID_TEST", "value": "yes"} in container["env"]
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert pod_spec["volumes"] == [
        {"name": "data", "persistentVolumeClaim": {"claimName": f"grid-{spec.node_id}-data"}}
    ]
    assert handle.endpoint == f"http://{pod['status']['podIP']}:8080"

    claim = read_claim(kube, spec.node_id)
    assert claim is not None
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert claim["metadata"]["labels"][LABEL_NODE_ID] == spec.node_id

    def ready() -> bool:
        status = (read_pod(kube, spec.node_id) or {}).get("status", {})
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        return conditions.get("Ready") == "True"

    wait_for(ready, 15, what="the readiness probe on /health to pass")
    assert platform.status(spec.node_id).detail == "ready"
    platform.stop(spec.node_id, grace=5)


def test_claim_deleted_on_stop_by_default(
    make_k8s: MakeK8s, make_spec: MakeSpec, kube: client.CoreV1Api
) -> None:
    platform = make_k8s()
    spec = make_spec()
    platform.spawn(spec)
    assert read_claim(kube, spec.node_id) is not None
    platform.stop(spec.node_id, grace=5)
    assert read_pod(kube, spec.node_id) is None
    wait_for(lambda: read_claim(kube, spec.node_id) is None, 10, what="the claim to be deleted")


def test_stop_of_an_unknown_node_deletes_no_claim(
    make_k8s: MakeK8s, kube: client.CoreV1Api, node_ids: list[str]
) -> None:
    """A claim named like a node's but not labelled as that node's survives a stop."""
    node_ids += ["foreign-1", "foreign-2"]  # the teardown deletes them
    for node_id, labels in [
        ("foreign-1", {}),
        ("foreign-2", {LABEL_MANAGED: "true", LABEL_NODE_ID: "someone-else"}),
    ]:
        body: Any = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim_name(node_id), "labels": labels},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
        kube.create_namespaced_persistent_volume_claim(NAMESPACE, body, _preload_content=False)
    platform = make_k8s()
    platform.stop("foreign-1", grace=0)
    platform.stop("foreign-2", grace=0)
    assert read_claim(kube, "foreign-1") is not None
    assert read_claim(kube, "foreign-2") is not None


def test_retain_pvc_keeps_claim_and_data(
    make_k8s: MakeK8s, make_spec: MakeSpec, kube: client.CoreV1Api
) -> None:
    platform = make_k8s(retain_pvc=True)
    spec = make_spec()
    first = platform.spawn(spec)
    assert wait_healthy(first.endpoint, HEALTH_TIMEOUT) is not None
    assert http_put(first.endpoint, "/kv/kept", b"across restarts") in (200, 201, 204)
    platform.stop(spec.node_id, grace=5)
    claim = read_claim(kube, spec.node_id)
    assert claim is not None and claim["status"]["phase"] == "Bound"
    assert not claim["metadata"].get("deletionTimestamp")

    second = platform.spawn(spec)  # same node id: the retained claim is reused
    assert wait_healthy(second.endpoint, HEALTH_TIMEOUT) is not None
    assert http_get(second.endpoint, "/kv/kept") == (200, b"across restarts")
    platform.stop(spec.node_id, grace=5)


# ---- selectors, failures, exits ------------------------------------------------------------


def test_list_filters_by_label_server_side(
    make_k8s: MakeK8s, make_spec: MakeSpec, kube: client.CoreV1Api
) -> None:
    platform = make_k8s()
    in_a = make_spec(pool="pool-a")
    in_b = make_spec(pool="pool-b")
    platform.spawn(in_a)
    platform.spawn(in_b)
    # the API server itself filters: a raw list with a selector returns only matching pods
    served = raw(
        kube.list_namespaced_pod(
            NAMESPACE,
            label_selector=f"{LABEL_POOL}=pool-a,{LABEL_AGENT_ID}={AGENT_ID}",
            _preload_content=False,
        )
    )["items"]
    assert [p["metadata"]["labels"][LABEL_NODE_ID] for p in served] == [in_a.node_id]
    assert [h.node_id for h in platform.list({LABEL_POOL: "pool-a"})] == [in_a.node_id]
    assert [h.node_id for h in platform.list({LABEL_POOL: "pool-b"})] == [in_b.node_id]
    both = {h.node_id for h in platform.list({LABEL_AGENT_ID: AGENT_ID})}
    assert {in_a.node_id, in_b.node_id} <= both
    assert platform.list({LABEL_POOL: "not a valid label value"}) == []
    platform.stop(in_a.node_id, grace=5)
    platform.stop(in_b.node_id, grace=5)


def test_unstartable_command_fails_spawn_and_leaves_nothing(
    make_k8s: MakeK8s, make_spec: MakeSpec, kube: client.CoreV1Api
) -> None:
    platform = make_k8s()
    spec = make_spec(command=["no-such-program-anywhere"])
    with pytest.raises(SpawnError, match="exit code 128"):
        platform.spawn(spec)
    assert read_pod(kube, spec.node_id) is None
    wait_for(lambda: read_claim(kube, spec.node_id) is None, 10, what="the claim to be deleted")


def test_start_timeout_fails_spawn_and_leaves_nothing(
    make_k8s: MakeK8s, make_spec: MakeSpec, kube: client.CoreV1Api
) -> None:
    platform = make_k8s(start_timeout=0.01)  # far less than the kubelet needs to start it
    spec = make_spec()
    with pytest.raises(SpawnError, match="not running within"):
        platform.spawn(spec)
    assert read_pod(kube, spec.node_id) is None
    wait_for(lambda: read_claim(kube, spec.node_id) is None, 10, what="the claim to be deleted")


def test_invalid_label_value_is_a_spawn_error(make_k8s: MakeK8s, make_spec: MakeSpec) -> None:
    platform = make_k8s()
    spec = make_spec(labels={"team": "storage & more"})
    with pytest.raises(SpawnError, match="team"):
        platform.spawn(spec)
    assert platform.status(spec.node_id).state == WorkloadState.MISSING


def _container_pid(kube: client.CoreV1Api, node_id: str) -> int:
    pod = read_pod(kube, node_id)
    assert pod is not None
    container_id: str = pod["status"]["containerStatuses"][0]["containerID"]
    return int(container_id.removeprefix("standin://"))


def test_watch_reports_exited_and_deleted_pods(
    make_k8s: MakeK8s, make_spec: MakeSpec, kube: client.CoreV1Api
) -> None:
    platform = make_k8s()
    crashing = make_spec()
    deleted = make_spec()
    stopped = make_spec()
    for spec in (crashing, deleted, stopped):
        platform.spawn(spec)
    watched = [crashing.node_id, deleted.node_id, stopped.node_id]
    exits: queue.Queue[tuple[str, WorkloadStatus]] = queue.Queue()
    platform.watch(lambda: list(watched), lambda n, st: exits.put((n, st)))

    platform.stop(stopped.node_id, grace=5)  # stopped on purpose: never reported
    # the stand-in started this process for the pod; kill it as the OOM killer would
    os.kill(_container_pid(kube, crashing.node_id), signal.SIGKILL)
    node_id, status = exits.get(timeout=15)
    assert node_id == crashing.node_id
    assert status.state == WorkloadState.EXITED
    assert status.exit_code == 128 + signal.SIGKILL
    assert platform.status(crashing.node_id).exit_code == 128 + signal.SIGKILL

    kube.delete_namespaced_pod(
        pod_name(deleted.node_id), NAMESPACE, grace_period_seconds=0, _preload_content=False
    )
    node_id, status = exits.get(timeout=15)
    assert (node_id, status.state) == (deleted.node_id, WorkloadState.MISSING)
    with pytest.raises(queue.Empty):
        exits.get(timeout=0.5)  # nothing twice, nothing for the stopped node
    platform.stop(crashing.node_id, grace=5)
    platform.close()


def test_spawn_is_idempotent_by_node_id(
    make_k8s: MakeK8s, make_spec: MakeSpec, kube: client.CoreV1Api
) -> None:
    platform = make_k8s()
    spec = make_spec()
    first = platform.spawn(spec)
    again = platform.spawn(spec)  # a task delivered twice
    assert again.endpoint == first.endpoint
    assert again.meta["uid"] == first.meta["uid"]
    platform.stop(spec.node_id, grace=5)


# ---- the stand-in itself --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("a=1", {"a": "1"}, True),
        ("a==1,b=2", {"a": "1", "b": "3"}, False),
        ("a!=1", {}, True),
        ("a in (1, 2),!c", {"a": "2"}, True),
        ("a notin (1,2)", {"a": "2"}, False),
        ("app.kubernetes.io/name", {"app.kubernetes.io/name": "x"}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_standin_label_selectors(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_label_selector(selector)(labels) is matches


def test_standin_rejects_bad_selectors_and_labels(
    kube: client.CoreV1Api, node_ids: list[str]
) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector("a in 1")
    with pytest.raises(client.ApiException) as err:
        kube.list_namespaced_pod(NAMESPACE, label_selector="=nope", _preload_content=False)
    assert err.value.status == 400
    node_ids.append("standin-invalid")
    pod: Any = {
        "metadata": {"name": pod_name("standin-invalid"), "labels": {"team": "a b"}},
        "spec": {"containers": [{"name": "c", "image": "grid:latest"}]},
    }
    with pytest.raises(client.ApiException) as err:
        kube.create_namespaced_pod(NAMESPACE, pod, _preload_content=False)
    assert err.value.status == 422


def test_standin_watch_filters_and_resumes(
    make_k8s: MakeK8s, make_spec: MakeSpec, kube: client.CoreV1Api
) -> None:
    platform = make_k8s()
    seen, other = make_spec(pool="watch-seen"), make_spec(pool="watch-other")
    version = raw(kube.list_namespaced_pod(NAMESPACE, _preload_content=False))["metadata"][
        "resourceVersion"
    ]
    platform.spawn(seen)
    platform.spawn(other)
    # started after both pods were made, from an older version: the journal replays them
    w = watch.Watch()
    names = set()
    for event in w.stream(
        kube.list_namespaced_pod,
        NAMESPACE,
        label_selector=f"{LABEL_POOL}=watch-seen",
        resource_version=version,
        timeout_seconds=1,
        deserialize=False,
    ):
        names.add(event["object"]["metadata"]["name"])
    assert names == {pod_name(seen.node_id)}
    platform.stop(seen.node_id, grace=5)
    platform.stop(other.node_id, grace=5)


# ---- configuration and errors ----------------------------------------------------------------


def test_config_is_validated_by_the_registry(standin: KubeStandin) -> None:
    with pytest.raises(ConfigError, match="platform.labels"):
        create_platform("kubernetes", AGENT_ID, {"labels": {"team": "a b"}})
    with pytest.raises(ConfigError, match="platform.storage_size"):
        create_platform("kubernetes", AGENT_ID, {"storage_size": "lots"})
    with pytest.raises(ConfigError, match="platform.colour"):
        create_platform("kubernetes", AGENT_ID, {"colour": "blue"})
    platform = create_platform(
        "kubernetes", AGENT_ID, {"kubeconfig": str(standin.kubeconfig), "context": "grid-standin"}
    )
    assert platform.status("k8s-never-made").state == WorkloadState.MISSING
    platform.close()


def test_missing_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kubeconfig"):
        KubernetesPlatform(
            KubernetesConfig(kubeconfig=str(tmp_path / "absent"), in_cluster=False), AGENT_ID
        )


def test_in_cluster_without_service_account_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ConfigError, match="in-cluster service account"):
        KubernetesPlatform(KubernetesConfig(), AGENT_ID)  # auto-detected from the env


def _kubeconfig_for(path: Path, server: str) -> str:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "c", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "c"}}],
            }
        )
    )
    return str(path)


class _Unavailable(http.server.BaseHTTPRequestHandler):
    def _fail(self) -> None:
        body = json.dumps(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": 503,
                "reason": "ServiceUnavailable",
                "message": "etcd is down",
            }
        ).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = do_PATCH = _fail

    def log_message(self, *args: Any) -> None:
        pass


def test_api_outages_are_temporary_errors(tmp_path: Path, make_spec: MakeSpec) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        failing = KubernetesPlatform(
            KubernetesConfig(
                kubeconfig=_kubeconfig_for(
                    tmp_path / "503", f"http://127.0.0.1:{server.server_port}"
                ),
                request_timeout=5,
            ),
            AGENT_ID,
        )
        with pytest.raises(PlatformUnavailableError, match="503 etcd is down"):
            failing.status("any")
        with pytest.raises(PlatformUnavailableError):
            failing.spawn(make_spec())
        failing.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    closed = socketless_port()
    refused = KubernetesPlatform(
        KubernetesConfig(
            kubeconfig=_kubeconfig_for(tmp_path / "refused", f"http://127.0.0.1:{closed}"),
            request_timeout=5,
        ),
        AGENT_ID,
    )
    with pytest.raises(PlatformUnavailableError, match="unreachable"):
        refused.list({})
    refused.close()


def socketless_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_missing_extra_names_grid_kubernetes() -> None:
    code = (
        "import sys; sys.modules['kubernetes'] = None\n"
        "from grid.core.errors import MissingExtraError\n"
        "from grid.platforms import platform_class\n"
        "try:\n"
        "    platform_class('kubernetes')\n"
        "except MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    assert "grid[kubernetes]" in out.stdout
