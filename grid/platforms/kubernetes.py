"""Kubernetes: one pod per node, with its own PersistentVolumeClaim mounted at /data.

Pod `grid-<node_id>` runs one container whose command is `node_argv(command, node_id,
container_port, "/data")` plus `listen_args` (`--host 0.0.0.0` by default: grid-node listens
on 127.0.0.1 unless told otherwise, which inside a pod is unreachable from the agent). Claim
`grid-<node_id>-data` holds the node's data; it is deleted on stop unless `retain_pvc`.

Pods use `restartPolicy: Never`. Grid's agent supervises restarts itself: with `Always` the
kubelet would restart a crashed node behind the agent's back (and back off on its own
schedule), the agent would never see the exit and two supervisors would fight. With `Never`
an exit is terminal and visible (phase Failed/Succeeded, exit code in the container state),
the watch reports it, and the agent decides, with the claim (and the data) still there.

Every call goes through a dedicated `ApiClient` built from the configured kubeconfig or the
in-cluster service account; the client's global default configuration is never touched.
Pod and claim bodies are plain JSON dicts and responses are read as JSON
(`_preload_content=False`), so what the adapter reads is exactly what the API server stores.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Any, Literal, TypeVar

import urllib3
from kubernetes import client
from kubernetes import config as _config
from kubernetes import watch as _watch
from kubernetes.client.exceptions import ApiException
from pydantic import Field, field_validator

from grid.core.errors import ConfigError, PlatformError, PlatformUnavailableError, SpawnError
from grid.core.naming import LABEL_MANAGED, LABEL_NODE_ID, node_labels
from grid.platforms.base import (
    ExitCallback,
    NodeHandle,
    NodeSpec,
    Platform,
    PlatformConfig,
    WorkloadState,
    WorkloadStatus,
    node_argv,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
NodeIds = Callable[[], list[str]]

# The kubernetes package is typed, but its config loaders and watch helper are not.
config: Any = _config
watch: Any = _watch

DATA_PATH = "/data"
CONTAINER_NAME = "node"
VOLUME_NAME = "data"
HEALTH_PATH = "/health"
APP_LABELS = {
    "app.kubernetes.io/name": "grid-node",
    "app.kubernetes.io/managed-by": "grid",
}
LABEL_INSTANCE = "app.kubernetes.io/instance"
TERMINAL_PHASES = ("Succeeded", "Failed")
#: Waiting reasons after which a pod will not start without a change to its spec.
FATAL_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
    }
)
#: Longest single watch request; the server ends it and the caller re-reads.
WATCH_CHUNK = 5.0
EXIT_WATCH_SECONDS = 60

_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def valid_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return bool(_LABEL_NAME.match(name))


def valid_label_value(value: str) -> bool:
    return bool(_LABEL_VALUE.match(value))


def label_problems(labels: dict[str, str]) -> list[str]:
    problems = []
    for key, value in labels.items():
        if not valid_label_key(key):
            problems.append(f"label key {key!r} is not a valid Kubernetes label key")
        if not valid_label_value(value):
            problems.append(
                f"label {key}={value!r}: values are at most 63 characters of [A-Za-z0-9-_.],"
                " starting and ending with an alphanumeric"
            )
    return problems


def _labelled_for(obj: dict[str, Any], node_id: str) -> bool:
    """True if a pod or claim carries Grid's labels for `node_id`."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(LABEL_MANAGED) == "true" and labels.get(LABEL_NODE_ID) == node_id)


def pod_name(node_id: str) -> str:
    return f"grid-{node_id}"


def claim_name(node_id: str) -> str:
    return f"grid-{node_id}-data"


class KubernetesConfig(PlatformConfig):
    namespace: str = "default"
    image: str = "grid:latest"
    kubeconfig: str | None = None
    context: str | None = None
    #: None: in-cluster when KUBERNETES_SERVICE_HOST is set and no kubeconfig is given.
    in_cluster: bool | None = None
    container_port: int = Field(8080, ge=1, le=65535)
    storage_size: str = "1Gi"
    storage_class: str | None = None
    retain_pvc: bool = False
    service_account: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    #: Seconds from pod creation to Running (image pulls included).
    start_timeout: float = Field(120.0, gt=0)
    #: Extra labels put on every pod and claim.
    labels: dict[str, str] = Field(default_factory=dict)
    #: Appended to the node's argv so it listens on the pod's interfaces.
    listen_args: list[str] = Field(default_factory=lambda: ["--host", "0.0.0.0"])
    #: Seconds for one API call (watches excepted).
    request_timeout: float = Field(30.0, gt=0)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            raise ValueError("must be a DNS label (lowercase alphanumerics and '-')")
        return value

    @field_validator("storage_size")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not _QUANTITY.match(value):
            raise ValueError("must be a Kubernetes quantity such as 512Mi or 10Gi")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        problems = label_problems(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value


# ---- reading pods ---------------------------------------------------------------------------


def _container_state(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    state: dict[str, Any] = statuses[0].get("state") or {} if statuses else {}
    return state


def pod_status(pod: dict[str, Any] | None) -> WorkloadStatus:
    """Grid's view of a pod (None: no such pod)."""
    if pod is None:
        return WorkloadStatus(WorkloadState.MISSING, detail="no such pod")
    status = pod.get("status", {})
    phase = status.get("phase", "Pending")
    state = _container_state(pod)
    if phase in TERMINAL_PHASES or "terminated" in state:
        term = state.get("terminated") or {}
        code = term.get("exitCode")
        parts = [f"pod {phase}"]
        if term:
            parts.append(f"container {term.get('reason', 'terminated')} (exit code {code})")
        message = term.get("message") or status.get("message") or status.get("reason")
        if message:
            parts.append(str(message))
        return WorkloadStatus(WorkloadState.EXITED, exit_code=code, detail=": ".join(parts))
    if phase == "Running" and "running" in state:
        statuses = status.get("containerStatuses") or [{}]
        return WorkloadStatus(
            WorkloadState.RUNNING, detail="ready" if statuses[0].get("ready") else "not ready"
        )
    waiting = state.get("waiting") or {}
    if waiting:
        detail = waiting.get("reason", "waiting")
        if waiting.get("message"):
            detail += f": {waiting['message']}"
        return WorkloadStatus(WorkloadState.STARTING, detail=detail)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            why = f"{cond.get('reason', 'Unschedulable')}: {cond.get('message', '')}"
            return WorkloadStatus(WorkloadState.STARTING, detail=why)
    return WorkloadStatus(WorkloadState.STARTING, detail=f"pod {phase}")


def _fatal_waiting(pod: dict[str, Any]) -> str | None:
    waiting = _container_state(pod).get("waiting") or {}
    if waiting.get("reason") in FATAL_WAITING:
        return f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
    return None


def _timestamp(value: str | None) -> float:
    if not value:
        return time.time()
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _api_message(exc: ApiException) -> str:
    try:
        message = json.loads(exc.body or "").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or exc.reason or "error")


class KubernetesPlatform(Platform):
    name = "kubernetes"
    config_model = KubernetesConfig
    config: KubernetesConfig

    def __init__(self, config: PlatformConfig, agent_id: str) -> None:
        super().__init__(config, agent_id)
        self.api_client: Any = client.ApiClient(self._load_configuration())
        self.core = client.CoreV1Api(self.api_client)
        self._lock = threading.Lock()
        self._stopping: set[str] = set()
        self._stopped_uids: deque[str] = deque(maxlen=1024)
        self._watcher: Any = None

    def _load_configuration(self) -> client.Configuration:
        cfg = client.Configuration()
        in_cluster = self.config.in_cluster
        if in_cluster is None:
            in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not (
                self.config.kubeconfig or self.config.context
            )
        try:
            if in_cluster:
                config.load_incluster_config(client_configuration=cfg)
            else:
                config.load_kube_config(
                    config_file=self.config.kubeconfig,
                    context=self.config.context,
                    client_configuration=cfg,
                    persist_config=False,
                )
        except (config.ConfigException, OSError) as exc:
            source = "in-cluster service account" if in_cluster else "kubeconfig"
            raise ConfigError(f"kubernetes: cannot load the {source}: {exc}") from None
        return cfg

    # ---- API calls with Grid's error mapping -------------------------------------------------

    @staticmethod
    def _error(exc: Exception, what: str, refused: type[PlatformError]) -> PlatformError:
        if isinstance(exc, ApiException):
            status = exc.status or 0
            if status == 0 or status == 429 or status >= 500:
                return PlatformUnavailableError(
                    f"kubernetes API unavailable while {what}: {status} {_api_message(exc)}"
                )
            return refused(f"kubernetes API refused {what}: {status} {_api_message(exc)}")
        return PlatformUnavailableError(f"kubernetes API unreachable while {what}: {exc}")

    def _call(
        self,
        what: str,
        fn: Callable[..., Any],
        *args: Any,
        expect: Collection[int] = (),
        refused: type[PlatformError] = PlatformError,
        text: bool = False,
        **kwargs: Any,
    ) -> tuple[int, Any]:
        """(HTTP status, decoded body); an `expect`ed error status gives (status, None).

        5xx, 429 and transport errors raise PlatformUnavailableError; other refusals `refused`.
        """
        try:
            resp = fn(
                *args,
                _preload_content=False,
                _request_timeout=self.config.request_timeout,
                **kwargs,
            )
        except ApiException as exc:
            if exc.status in expect:
                return int(exc.status), None
            raise self._error(exc, what, refused) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._error(exc, what, refused) from None
        data: bytes = resp.data
        return int(resp.status), data.decode("utf-8", "replace") if text else json.loads(data)

    def _read_pod(self, name: str) -> dict[str, Any] | None:
        status, pod = self._call(
            f"reading pod {name}",
            self.core.read_namespaced_pod,
            name,
            self.config.namespace,
            expect=(404,),
        )
        return None if status == 404 else dict(pod)

    def _await_pod(
        self, name: str, deadline: float, done: Callable[[dict[str, Any] | None], T | None]
    ) -> T | None:
        """Read, then watch, pod `name` until `done(pod, or None once gone)` gives a value.

        None when `deadline` passes first. Each watch request lasts at most WATCH_CHUNK
        seconds and starts from the version just read, so no change is missed.
        """
        while True:
            pod = self._read_pod(name)
            result = done(pod)
            if result is not None:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            assert pod is not None  # done(None) must decide: a missing pod cannot change
            w = watch.Watch()
            try:
                for event in w.stream(
                    self.core.list_namespaced_pod,
                    self.config.namespace,
                    field_selector=f"metadata.name={name}",
                    resource_version=pod["metadata"].get("resourceVersion"),
                    timeout_seconds=max(1, math.ceil(min(remaining, WATCH_CHUNK))),
                    _request_timeout=(self.config.request_timeout, WATCH_CHUNK + 10),
                    deserialize=False,
                ):
                    obj = None if event["type"] == "DELETED" else event["object"]
                    result = done(obj)
                    if result is not None:
                        return result
                    if time.monotonic() >= deadline:
                        return None
            except ApiException as exc:
                if exc.status != 410:  # 410 Gone: too old a version; re-read
                    raise self._error(exc, f"watching pod {name}", PlatformError) from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise self._error(exc, f"watching pod {name}", PlatformError) from None
            finally:
                w.stop()

    # ---- manifests --------------------------------------------------------------------------

    def labels_for(self, spec: NodeSpec) -> dict[str, str]:
        return {
            **self.config.labels,
            **spec.labels,
            **APP_LABELS,
            LABEL_INSTANCE: spec.node_id,
            **node_labels(spec.node_id, spec.agent_id, spec.pool),
        }

    def claim_manifest(self, spec: NodeSpec) -> dict[str, Any]:
        claim_spec: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": self.config.storage_size}},
        }
        if self.config.storage_class is not None:
            claim_spec["storageClassName"] = self.config.storage_class
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim_name(spec.node_id), "labels": self.labels_for(spec)},
            "spec": claim_spec,
        }

    def pod_manifest(self, spec: NodeSpec) -> dict[str, Any]:
        port = self.config.container_port
        container: dict[str, Any] = {
            "name": CONTAINER_NAME,
            "image": spec.image or self.config.image,
            "command": [
                *node_argv(spec.command, spec.node_id, port, DATA_PATH),
                *self.config.listen_args,
            ],
            "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
            "env": [{"name": k, "value": v} for k, v in sorted(spec.env.items())],
            "volumeMounts": [{"name": VOLUME_NAME, "mountPath": DATA_PATH}],
            "readinessProbe": {
                "httpGet": {"path": HEALTH_PATH, "port": port},
                "periodSeconds": 2,
                "timeoutSeconds": 1,
                "failureThreshold": 3,
            },
        }
        quantities: dict[str, str] = {}
        if spec.memory_mb:
            quantities["memory"] = f"{spec.memory_mb}Mi"
        if spec.cpus:
            quantities["cpu"] = f"{max(1, round(spec.cpus * 1000))}m"
        if quantities:  # requests == limits: the node gets exactly what it was sized for
            container["resources"] = {"requests": dict(quantities), "limits": dict(quantities)}
        if self.config.image_pull_policy is not None:
            container["imagePullPolicy"] = self.config.image_pull_policy
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [container],
            "volumes": [
                {
                    "name": VOLUME_NAME,
                    "persistentVolumeClaim": {"claimName": claim_name(spec.node_id)},
                },
            ],
        }
        if self.config.service_account is not None:
            pod_spec["serviceAccountName"] = self.config.service_account
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name(spec.node_id), "labels": self.labels_for(spec)},
            "spec": pod_spec,
        }

    def _handle(self, pod: dict[str, Any]) -> NodeHandle:
        meta, status = pod["metadata"], pod.get("status", {})
        container = pod["spec"]["containers"][0]
        ports = container.get("ports") or [{}]
        port = int(ports[0].get("containerPort", self.config.container_port))
        ip = status.get("podIP") or ""
        host = f"[{ip}]" if ":" in ip else ip
        return NodeHandle(
            node_id=meta["labels"][LABEL_NODE_ID],
            platform=self.name,
            ref=meta["name"],
            endpoint=f"http://{host}:{port}" if ip else "",
            port=port,
            started_at=_timestamp(status.get("startTime") or meta.get("creationTimestamp")),
            meta={
                "namespace": meta.get("namespace", self.config.namespace),
                "pod": meta["name"],
                "uid": meta.get("uid", ""),
                "claim": claim_name(meta["labels"][LABEL_NODE_ID]),
                "phase": status.get("phase", ""),
                "pod_ip": ip,
                "node_name": pod["spec"].get("nodeName", ""),
                "image": container.get("image", ""),
            },
            labels=dict(meta["labels"]),
        )

    # ---- lifecycle ----------------------------------------------------------------------------

    def spawn(self, spec: NodeSpec) -> NodeHandle:
        problems = label_problems(self.labels_for(spec))
        if problems:
            raise SpawnError(f"node {spec.node_id}: " + "; ".join(problems))
        name = pod_name(spec.node_id)
        deadline = time.monotonic() + self.config.start_timeout
        created_claim = self._ensure_claim(spec, deadline)
        try:
            self._create_pod(spec, deadline)
            pod = self._await_pod(name, deadline, self._started)
            if pod is None:
                last = pod_status(self._read_pod(name))
                raise SpawnError(
                    f"pod {name} was not running within {self.config.start_timeout:g}s"
                    f" ({last.detail})"
                )
        except PlatformError:
            with contextlib.suppress(PlatformError):
                self._remove(spec.node_id, grace=0, remove_claim=created_claim)
            raise
        return self._handle(pod)

    @staticmethod
    def _started(pod: dict[str, Any] | None) -> dict[str, Any] | None:
        """The pod once Running with an IP; SpawnError once it cannot get there."""
        if pod is None:
            raise SpawnError("the pod was deleted while starting")
        status = pod_status(pod)
        if status.state == WorkloadState.EXITED:
            raise SpawnError(f"pod {pod['metadata']['name']} failed to start: {status.detail}")
        fatal = _fatal_waiting(pod)
        if fatal:
            raise SpawnError(f"pod {pod['metadata']['name']} cannot start: {fatal}")
        if status.state == WorkloadState.RUNNING and pod.get("status", {}).get("podIP"):
            return pod
        return None

    def _ensure_claim(self, spec: NodeSpec, deadline: float) -> bool:
        """Create the node's claim or reuse a live one; True when this call created it."""
        name = claim_name(spec.node_id)
        delay = 0.05
        while True:
            status, _ = self._call(
                f"creating claim {name}",
                self.core.create_namespaced_persistent_volume_claim,
                self.config.namespace,
                self.claim_manifest(spec),
                expect=(409,),
                refused=SpawnError,
            )
            if status != 409:
                return True
            status, claim = self._call(
                f"reading claim {name}",
                self.core.read_namespaced_persistent_volume_claim,
                name,
                self.config.namespace,
                expect=(404,),
            )
            if status != 404 and not claim["metadata"].get("deletionTimestamp"):
                return False  # a retained claim of this node: reuse its data
            if time.monotonic() + delay > deadline:
                raise SpawnError(f"claim {name} is still being deleted")
            self._watch_stop.wait(delay)  # a Terminating claim of a stopped node goes soon
            delay = min(delay * 2, 1.0)

    def _create_pod(self, spec: NodeSpec, deadline: float) -> None:
        """Create the pod; an existing live pod of this node is kept (spawn is idempotent)."""
        name = pod_name(spec.node_id)
        for _ in range(2):
            status, _ = self._call(
                f"creating pod {name}",
                self.core.create_namespaced_pod,
                self.config.namespace,
                self.pod_manifest(spec),
                expect=(409,),
                refused=SpawnError,
            )
            if status != 409:
                return
            existing = self._read_pod(name)
            if existing is None:
                continue
            dead = pod_status(existing).state == WorkloadState.EXITED
            if not dead and not existing["metadata"].get("deletionTimestamp"):
                return  # delivered twice: this spawn waits for the pod the first one made
            self._delete_pod_and_wait(name, grace=0, deadline=deadline)
        raise SpawnError(f"pod {name} keeps existing; cannot create it")

    def _delete_pod_and_wait(self, name: str, grace: int, deadline: float) -> bool:
        """Delete and wait until gone; False if it outlived `deadline`."""
        status, pod = self._call(
            f"deleting pod {name}",
            self.core.delete_namespaced_pod,
            name,
            self.config.namespace,
            grace_period_seconds=grace,
            expect=(404,),
        )
        if status == 404:
            return True
        uid = (pod or {}).get("metadata", {}).get("uid")
        if uid:
            with self._lock:
                self._stopped_uids.append(uid)
        return bool(self._await_pod(name, deadline, lambda p: True if p is None else None))

    def _remove(self, node_id: str, grace: float, remove_claim: bool) -> None:
        """Delete the node's pod (then its claim): only objects labelled as that node's, so
        stopping an unknown node deletes nothing of anyone else's in the namespace."""
        name = pod_name(node_id)
        seconds = max(0, math.ceil(grace))
        pod = self._read_pod(name)
        if pod is not None and not _labelled_for(pod, node_id):
            log.warning("not deleting pod %s: it is not labelled as node %s's", name, node_id)
        elif pod is not None and not self._delete_pod_and_wait(
            name, seconds, time.monotonic() + grace + 30
        ):
            log.warning("pod %s outlived its grace period; deleting it forcibly", name)
            if not self._delete_pod_and_wait(name, 0, time.monotonic() + 30):
                raise PlatformError(f"pod {name} is still there after a forced deletion")
        if remove_claim:
            claim = claim_name(node_id)
            status, body = self._call(
                f"reading claim {claim}",
                self.core.read_namespaced_persistent_volume_claim,
                claim,
                self.config.namespace,
                expect=(404,),
            )
            if status == 404:
                return
            if not _labelled_for(body, node_id):
                log.warning(
                    "not deleting claim %s: it is not labelled as node %s's", claim, node_id
                )
                return
            self._call(
                f"deleting claim {claim}",
                self.core.delete_namespaced_persistent_volume_claim,
                claim,
                self.config.namespace,
                expect=(404,),
            )

    def stop(self, node_id: str, grace: float) -> None:
        with self._lock:
            self._stopping.add(node_id)
        try:
            self._remove(node_id, grace, remove_claim=not self.config.retain_pvc)
        finally:
            with self._lock:
                self._stopping.discard(node_id)

    def status(self, node_id: str) -> WorkloadStatus:
        return pod_status(self._read_pod(pod_name(node_id)))

    def list(self, labels: dict[str, str]) -> list[NodeHandle]:
        wanted = {LABEL_MANAGED: "true", **labels}
        if label_problems(wanted):
            return []  # no pod can carry an invalid label
        selector = ",".join(f"{k}={v}" for k, v in sorted(wanted.items()))
        _, body = self._call(
            "listing pods",
            self.core.list_namespaced_pod,
            self.config.namespace,
            label_selector=selector,
        )
        return [
            self._handle(pod)
            for pod in body.get("items") or []
            if not pod["metadata"].get("deletionTimestamp")
            and pod.get("status", {}).get("phase") not in TERMINAL_PHASES
            and LABEL_NODE_ID in (pod["metadata"].get("labels") or {})
        ]

    def logs(self, node_id: str, lines: int = 100) -> str:
        if lines <= 0:
            return ""
        name = pod_name(node_id)
        status, text = self._call(
            f"reading logs of pod {name}",
            self.core.read_namespaced_pod_log,
            name,
            self.config.namespace,
            container=CONTAINER_NAME,
            tail_lines=lines,
            expect=(400, 404),
            text=True,  # 400: the container has not started yet
        )
        return "" if status in (400, 404) else str(text)

    # ---- exit watch ---------------------------------------------------------------------------

    def watch(self, node_ids: NodeIds, on_exit: ExitCallback) -> None:
        """Report exits from a pod watch; while the watch fails, poll status instead."""
        if self._watch_thread is not None:
            return
        self._watch_thread = threading.Thread(
            target=self._watch_loop,
            args=(node_ids, on_exit),
            name="kubernetes-watch",
            daemon=True,
        )
        self._watch_thread.start()

    def _watch_loop(self, node_ids: NodeIds, on_exit: ExitCallback) -> None:
        reported: dict[str, str] = {}  # node_id -> uid of the pod whose end was reported
        backoff = self.watch_interval
        while not self._watch_stop.is_set():
            w = watch.Watch()
            self._watcher = w
            try:
                for event in w.stream(
                    self.core.list_namespaced_pod,
                    self.config.namespace,
                    label_selector=f"{LABEL_MANAGED}=true",
                    timeout_seconds=EXIT_WATCH_SECONDS,
                    _request_timeout=(self.config.request_timeout, EXIT_WATCH_SECONDS + 15),
                    deserialize=False,
                ):
                    if self._watch_stop.is_set():
                        break
                    self._on_pod_event(event["type"], event["object"], node_ids, on_exit, reported)
                backoff = self.watch_interval
            except Exception as exc:  # noqa: BLE001 - never let the watch thread die
                if self._watch_stop.is_set():
                    break
                log.warning("pod watch failed (%s); polling until it works again", exc)
                self._poll_once(node_ids, on_exit, reported)
                self._watch_stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                self._watcher = None

    def _ignored(self, node_id: str, uid: str) -> bool:
        with self._lock:
            return node_id in self._stopping or uid in self._stopped_uids

    def _on_pod_event(
        self,
        kind: str,
        pod: dict[str, Any],
        node_ids: NodeIds,
        on_exit: ExitCallback,
        reported: dict[str, str],
    ) -> None:
        meta = pod.get("metadata") or {}
        node_id = (meta.get("labels") or {}).get(LABEL_NODE_ID)
        uid = meta.get("uid", "")
        if node_id is None or reported.get(node_id) == uid or self._ignored(node_id, uid):
            return
        if kind == "DELETED":
            st = WorkloadStatus(WorkloadState.MISSING, detail="the pod was deleted")
        else:
            st = pod_status(pod)
            if st.state != WorkloadState.EXITED:
                return
        if node_id not in node_ids():
            return
        reported[node_id] = uid
        on_exit(node_id, st)

    def _poll_once(
        self, node_ids: NodeIds, on_exit: ExitCallback, reported: dict[str, str]
    ) -> None:
        for node_id in node_ids():
            try:
                pod = self._read_pod(pod_name(node_id))
            except PlatformError:
                return  # the API is down: nothing to learn until it is back
            uid = (pod or {}).get("metadata", {}).get("uid", "")
            st = pod_status(pod)
            if (
                st.state in (WorkloadState.EXITED, WorkloadState.MISSING)
                and not self._ignored(node_id, uid)
                and reported.get(node_id) != uid
            ):
                reported[node_id] = uid
                on_exit(node_id, st)

    def close(self) -> None:
        self._watch_stop.set()
        thread = self._watch_thread
        deadline = time.monotonic() + 5
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            w = self._watcher
            if w is not None:
                w.stop()  # shuts the socket down: the blocked read returns
            thread.join(0.05)
        super().close()
        self.api_client.close()
