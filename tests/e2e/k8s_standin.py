"""A Kubernetes stand-in for tests: kmock's API emulator plus what it lacks, and a fake kubelet.

No real API server can run on the test machines, so the Kubernetes adapter is tested against
this stand-in. It is driven over HTTP by the official `kubernetes` client through a kubeconfig,
exactly as a real cluster would be, and it runs each pod's container command as a real local
process, so the nodes it starts answer HTTP like real pods.

What it emulates
----------------
API server (kmock's `KubernetesEmulator`, extended by `StandinApiServer`), core/v1 pods and
persistentvolumeclaims only:
- create / get / list / watch / merge-patch / delete, 404 and 409 as a real server;
- `metadata.uid`, `resourceVersion` (one global counter, bumped on every write),
  `creationTimestamp`, `generation`, `generateName`; `status.phase: Pending` on create; pod
  defaults `restartPolicy: Always`, `terminationGracePeriodSeconds: 30`, per-container
  `imagePullPolicy`; the `kubernetes.io/pvc-protection` finalizer on claims;
- validation on create (422 Invalid): names (DNS-1123), label keys and values, at least one
  container, container names, images, volume mounts naming declared volumes, claim
  storage requests and access modes;
- label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and field selectors
  (`=`, `==`, `!=` on any dotted path such as `metadata.name`, `status.phase`), filtered
  server-side on list and watch; 400 on a malformed selector;
- watch: synthetic ADDED events for existing objects when no `resourceVersion` is given;
  from a `resourceVersion`, every later event is replayed from a journal of the last 10,000
  events (a watch cache; older versions get a 410 Expired ERROR event); `timeoutSeconds`
  (the stream ends, as a real server ends it);
- graceful pod deletion: a DELETE of a scheduled, non-terminal pod with a grace period sets
  `deletionTimestamp` / `deletionGracePeriodSeconds`; the kubelet stops the container and
  removes the pod with a final grace-0 DELETE, so a pod disappears only once its process
  is gone; grace 0 removes it at once (force);
- `status` subresource writes only touch `status`, main-resource writes never touch it;
  `metadata.resourceVersion` in a patch is an optimistic-concurrency precondition (409);
- `GET .../pods/NAME/log` with `tailLines` (text/plain), 400 while the container has not
  started; `/version` and `/version/`.

Fake kubelet (`FakeKubelet`, one node named `standin-node`), which also plays the scheduler,
the PV controller and the PVC-protection controller:
- watches pods; binds each new pod to the node, binds its claims on first use
  (WaitForFirstConsumer: `spec.volumeName`, `status.phase: Bound`, capacity), and keeps the
  pod Pending with PodScheduled=False (Unschedulable) while a claim is missing;
- images: a pod whose image is not in the stand-in's `images` gets the waiting reason
  `ErrImagePull`, then `ImagePullBackOff`; an unparsable reference gets `InvalidImageName`;
- runs `command + args` (or the image's entrypoint) as a local process in its own session:
  a program named in `programs` (e.g. `grid-node`) is replaced by a local argv prefix; each
  volume mount path (e.g. `/data`) is replaced, in argv and env values, by the claim's
  folder; env from `env[].value` and the downward API (`metadata.name`, `metadata.namespace`,
  `metadata.uid`, `spec.nodeName`, `status.podIP`, `status.hostIP`);
- pod network: each pod gets its own loopback address (127.A.B.C, checked free) as `podIP`,
  so all pods can listen on the same container port; for programs with a `host_flag`, a
  wildcard value (`0.0.0.0`, `::`) of that flag, or its absence, becomes `--host <podIP>`
  (binding all interfaces inside a pod means binding the pod IP);
- status: Pending (ContainerCreating) → Running with `containerStatuses[].state.running`,
  `started`; `ready` and the Ready / ContainersReady conditions follow the readiness probe
  (httpGet only: path, port number or name, initialDelaySeconds, periodSeconds,
  timeoutSeconds, successThreshold, failureThreshold); a pod without a readiness probe is
  ready once started;
- exit: `state.terminated` (exitCode, 128+N for signal N, reason Completed / Error,
  StartError with 128 for a program that cannot be executed) and phase Succeeded / Failed;
- stdout and stderr of the process are the pod log;
- deletion: SIGTERM to the process group, SIGKILL after the grace period, then removal;
- claims: data folders live as long as the claim (reclaim policy Delete); a deleted claim
  stays Terminating while a non-terminal pod uses it.

What it does not emulate
------------------------
Any other resource or API group (no Deployments, Services, namespaces objects, nodes, events,
RBAC, PersistentVolume objects); authentication (any token is accepted) and admission beyond
the checks above; JSON patch and server-side apply (415), PUT/replace; immutability of pod
specs; field managers; bookmarks; pagination (`limit`
/ `continue` are ignored); restart policies (a container is never restarted: every pod
behaves as `restartPolicy: Never`, which is what Grid uses); init and sidecar containers
(only the first container runs); liveness and startup probes, exec and tcpSocket probes;
resource requests and limits (stored, never enforced: no cgroups, no OOMKilled); real images
and filesystems (the process runs on the host, with the host's environment, cwd a per-pod
folder, only persistentVolumeClaim volumes are mapped); pod-local loopback (a process bound
to 127.0.0.1 would share the host's loopback); node failure, eviction, preemption,
multiple nodes; `previous`, `follow`, `sinceSeconds`, `timestamps` on logs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import datetime
import http.client
import json
import logging
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp.web
import attrs
import kmock
import urllib3
from kmock._internal.aiobus import Bus  # not in kmock.__all__
from kubernetes import client
from kubernetes import watch as _watch

from grid.platforms.process import tail_file

log = logging.getLogger(__name__)
watch: Any = _watch  # the watch helper is untyped

NODE_NAME = "standin-node"
POD = kmock.resource(group="", version="v1", plural="pods")
PVC = kmock.resource(group="", version="v1", plural="persistentvolumeclaims")
KINDS = {POD: "Pod", PVC: "PersistentVolumeClaim"}
PVC_PROTECTION = "kubernetes.io/pvc-protection"
STANDIN_VERSION = "v1.31.0-grid-standin"

# ---- names, labels, selectors --------------------------------------------------------------

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?)$")
_IMAGE_REF = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)


def label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"label key {key!r}: prefix must be a DNS subdomain"
    if not _LABEL_NAME.match(name):
        return f"label key {key!r}: name must be 1-63 alphanumerics, '-', '_' or '.'"
    return None


def label_value_problem(key: str, value: Any) -> str | None:
    if not isinstance(value, str) or not _LABEL_VALUE.match(value):
        return (
            f"label {key!r}: value {value!r} must be at most 63 alphanumerics, '-', '_' or '.',"
            " starting and ending with an alphanumeric"
        )
    return None


Predicate = Callable[[Mapping[str, Any]], bool]


class SelectorError(ValueError):
    pass


def _split_terms(text: str) -> list[str]:
    """Split a selector on commas that are not inside parentheses."""
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    terms.append("".join(current).strip())
    return [t for t in terms if t]


_SET_TERM = re.compile(r"^(\S+)\s+(in|notin)\s+\(([^)]*)\)$")
_EQ_TERM = re.compile(r"^([^=!\s]+)\s*(==|=|!=)\s*([^=!\s]*)$")


def parse_label_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """A predicate over a label dict for a Kubernetes label selector string."""
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for term in _split_terms(text):
        checks.append(_label_requirement(term))
    return lambda labels: all(check(labels) for check in checks)


def _label_requirement(term: str) -> Callable[[Mapping[str, str]], bool]:
    key: str
    if m := _SET_TERM.match(term):
        key, negate = m.group(1), m.group(2) == "notin"
        values = {v.strip() for v in m.group(3).split(",")}
        check = lambda lb: (lb.get(key) in values) != negate  # noqa: E731
    elif m := _EQ_TERM.match(term):
        key, negate, value = m.group(1), m.group(2) == "!=", m.group(3)
        check = lambda lb: (lb.get(key) == value) != negate  # noqa: E731
    else:
        negate = term.startswith("!")
        key = term[1:].strip() if negate else term
        check = lambda lb: (key in lb) != negate  # noqa: E731
    if label_key_problem(key) is not None:
        raise SelectorError(f"unable to parse requirement: {term!r}")
    return check


def _dotted(obj: Mapping[str, Any], path: str) -> str | None:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return None if value is None else str(value)


def parse_field_selector(text: str) -> Predicate:
    """A predicate over an object for a field selector (`=`, `==`, `!=` on dotted paths)."""
    checks: list[Predicate] = []
    for term in _split_terms(text):
        m = _EQ_TERM.match(term)
        if m is None:
            raise SelectorError(f"invalid field selector term: {term!r}")
        checks.append(_field_requirement(m.group(1), m.group(2) == "!=", m.group(3)))
    return lambda obj: all(check(obj) for check in checks)


def _field_requirement(path: str, negate: bool, value: str) -> Predicate:
    return lambda obj: ((_dotted(obj, path) or "") == value) != negate


def selector_predicate(params: Mapping[str, str]) -> Predicate:
    labels = parse_label_selector(params.get("labelSelector", ""))
    fields = parse_field_selector(params.get("fieldSelector", ""))
    return lambda obj: labels(obj.get("metadata", {}).get("labels") or {}) and fields(obj)


# ---- validation ------------------------------------------------------------------------------


def object_problems(resource: Any, obj: Mapping[str, Any]) -> list[str]:
    """What a real API server would reject on create (a useful subset)."""
    problems: list[str] = []
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    if not name or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        problems.append(f"metadata.name: Invalid value: {name!r}: must be a DNS-1123 subdomain")
    for key, value in (meta.get("labels") or {}).items():
        problem = label_key_problem(key) or label_value_problem(key, value)
        if problem:
            problems.append(f"metadata.labels: Invalid value: {problem}")
    spec = obj.get("spec") or {}
    if resource == POD:
        containers = spec.get("containers") or []
        if not containers:
            problems.append("spec.containers: Required value")
        volumes = {v.get("name") for v in spec.get("volumes") or []}
        for i, c in enumerate(containers):
            if not _DNS_LABEL.match(c.get("name") or ""):
                problems.append(f"spec.containers[{i}].name: Invalid value: {c.get('name')!r}")
            if not c.get("image"):
                problems.append(f"spec.containers[{i}].image: Required value")
            for j, mount in enumerate(c.get("volumeMounts") or []):
                if mount.get("name") not in volumes:
                    problems.append(
                        f"spec.containers[{i}].volumeMounts[{j}].name: Not found: "
                        f"{mount.get('name')!r}"
                    )
    elif resource == PVC:
        if not spec.get("accessModes"):
            problems.append("spec.accessModes: Required value")
        if not (spec.get("resources") or {}).get("requests", {}).get("storage"):
            problems.append("spec.resources[storage]: Required value")
    return problems


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _api_error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


# ---- the API server ---------------------------------------------------------------------------


@attrs.define
class JournaledBus(Bus[Any]):
    """kmock's event bus, also remembering recent events by resourceVersion (a watch cache)."""

    journal: deque[tuple[int, dict[str, Any]]] = attrs.field(factory=lambda: deque(maxlen=10_000))

    async def put(self, *items: Any) -> None:
        for item in items:
            rv = (item.get("object") or {}).get("metadata", {}).get("resourceVersion")
            self.journal.append((int(rv or 0), item))
        await super().put(*items)


LogSource = Callable[[str, str, "int | None"], "str | None"]


@attrs.define(kw_only=True)
class StandinApiServer(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with the behaviour listed in the module docstring."""

    log_source: LogSource | None = None
    _rv: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._buses = collections.defaultdict(JournaledBus)
        self.resources[POD] = kmock.ResourceInfo(
            kind="Pod",
            namespaced=True,
            singular="pod",
            subresources={"status", "log"},
            verbs={"create", "delete", "get", "list", "patch", "watch"},
        )
        self.resources[PVC] = kmock.ResourceInfo(
            kind="PersistentVolumeClaim",
            namespaced=True,
            singular="persistentvolumeclaim",
            subresources={"status"},
            verbs={"create", "delete", "get", "list", "patch", "watch"},
        )
        self.fallback["get /version/"] << self._serve_server_version

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    async def _serve_server_version(self, request: kmock.Request) -> kmock.Payload:
        return {
            "major": "1",
            "minor": "31",
            "gitVersion": STANDIN_VERSION,
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.22 (emulated by kmock)",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _stored(self, key: tuple[Any, str | None, str]) -> Any:
        if key in self.objects and not self.objects[key].deleted:
            return self.objects[key]
        return None

    async def _emit(self, resource: Any, kind: str, raw: dict[str, Any]) -> None:
        await self._buses[resource].put({"type": kind, "object": raw})

    # -- dispatch --

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        if res in KINDS:
            if request.subresource == "log" and request.method == kmock.method.GET:
                return await self._serve_log(request)
            if request.action == kmock.action.CREATE:
                self._prepare_create(request)
            elif request.action == kmock.action.UPDATE:
                return await self._serve_patch(request)
            elif request.action == kmock.action.DELETE and request.name is not None:
                response = await self._graceful_delete(request)
                if response is not None:
                    return response
            elif request.method == kmock.method.PUT:
                raise _api_error(405, "MethodNotAllowed", "the stand-in does not emulate PUT")
        return await super()._handle(request)

    def _prepare_create(self, request: kmock.Request) -> None:
        obj = request.data
        if not isinstance(obj, dict):
            raise _api_error(400, "BadRequest", "the body must be a JSON object")
        meta = obj.setdefault("metadata", {})
        if request.namespace is None:
            raise _api_error(404, "NotFound", "only namespaced resources are emulated")
        if meta.get("namespace", request.namespace) != request.namespace:
            raise _api_error(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
            meta["name"] = meta["generateName"] + suffix
        problems = object_problems(request.resource, obj)
        if problems:
            kind = KINDS[cast(Any, request.resource)]
            raise _api_error(
                422, "Invalid", f'{kind} "{meta.get("name")}" is invalid: ' + "; ".join(problems)
            )
        meta.update(
            namespace=request.namespace,
            uid=str(uuid.uuid4()),
            resourceVersion=self._next_rv(),
            creationTimestamp=now_rfc3339(),
            generation=1,
        )
        spec = obj.setdefault("spec", {})
        if request.resource == POD:
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            for c in spec["containers"]:
                tagged = ":" in c["image"].rsplit("/", 1)[-1] or "@" in c["image"]
                latest = not tagged or c["image"].endswith(":latest")
                c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            obj["status"] = {"phase": "Pending"}
        else:
            spec.setdefault("volumeMode", "Filesystem")
            meta["finalizers"] = sorted({*meta.get("finalizers", []), PVC_PROTECTION})
            obj["status"] = {"phase": "Pending"}
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", KINDS[cast(Any, request.resource)])

    async def _serve_patch(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        ctype = request.headers.get("Content-Type", "")
        patch = request.data
        if "json-patch" in ctype or "apply-patch" in ctype or not isinstance(patch, dict):
            raise _api_error(
                415, "UnsupportedMediaType", "the stand-in emulates merge patches of objects only"
            )
        if request.subresource == "status":
            patch = {k: v for k, v in patch.items() if k in ("status", "metadata")}
        elif request.subresource is None:
            patch = {k: v for k, v in patch.items() if k != "status"}
        else:
            raise _api_error(404, "NotFound", f"no subresource {request.subresource!r}")
        meta_patch = dict(patch.get("metadata") or {})
        key = (request.resource, request.namespace, cast(str, request.name))
        async with self._lock:
            obj = self._stored(key)
            if obj is None:
                raise kmock.KubernetesObjectNotFoundError()
            current = obj.raw["metadata"]["resourceVersion"]
            wanted = meta_patch.pop("resourceVersion", None)
            if wanted is not None and wanted != current:
                raise _api_error(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes "
                    "to the latest version and try again",
                )
            for fixed in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp"):
                meta_patch.pop(fixed, None)
            meta_patch["resourceVersion"] = self._next_rv()
            obj.patch(copy.deepcopy({**patch, "metadata": meta_patch}))  # None deletes a key
            raw = obj.raw
            meta = raw["metadata"]
            if (
                request.resource != POD
                and meta.get("deletionTimestamp")
                and not meta.get("finalizers")
            ):
                obj.delete()  # the last finalizer is gone: garbage-collect
                await self._emit(request.resource, "DELETED", raw)
            else:
                await self._emit(request.resource, "MODIFIED", raw)
        return aiohttp.web.json_response(raw)

    async def _graceful_delete(self, request: kmock.Request) -> aiohttp.web.StreamResponse | None:
        """Bump the version; mark a running pod Terminating instead of removing it at once."""
        body = request.data if isinstance(request.data, dict) else {}
        grace_text = request.params.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
        key = (request.resource, request.namespace, cast(str, request.name))
        async with self._lock:
            obj = self._stored(key)
            if obj is None:
                return None  # kmock answers 404
            raw = obj.raw
            meta, spec = raw["metadata"], raw.get("spec", {})
            grace = int(grace_text) if grace_text is not None else None
            if request.resource == POD:
                if grace is None:
                    grace = int(spec.get("terminationGracePeriodSeconds", 30))
                scheduled = bool(spec.get("nodeName"))
                terminal = raw.get("status", {}).get("phase") in ("Succeeded", "Failed")
                if grace > 0 and scheduled and not terminal:
                    if not meta.get("deletionTimestamp"):
                        obj.patch(
                            {
                                "metadata": {
                                    "deletionTimestamp": now_rfc3339(),
                                    "deletionGracePeriodSeconds": grace,
                                    "resourceVersion": self._next_rv(),
                                }
                            }
                        )
                        await self._emit(request.resource, "MODIFIED", obj.raw)
                    return aiohttp.web.json_response(obj.raw)
            obj.patch({"metadata": {"resourceVersion": self._next_rv()}})
        return None  # kmock removes it, or marks it deleted while finalizers remain

    # -- reads --

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        try:
            match = selector_predicate(request.params)
        except SelectorError as exc:
            raise _api_error(400, "BadRequest", str(exc)) from None
        listed = cast(dict[str, Any], await super()._serve_list(request))
        kind = KINDS.get(cast(Any, request.resource), "Object") + "List"
        return {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": [item for item in listed["items"] if match(item)],
        }

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        try:
            match = selector_predicate(request.params)
        except SelectorError as exc:
            raise _api_error(400, "BadRequest", str(exc)) from None
        since = int(request.params.get("resourceVersion") or 0)
        timeout = request.params.get("timeoutSeconds")
        deadline = time.monotonic() + float(timeout) if timeout else None
        bus = cast(JournaledBus, self._buses[cast(Any, request.resource)])
        yield b""  # headers out: the client sees the stream open even if nothing happens

        def wanted(event: dict[str, Any]) -> bool:
            obj = event.get("object") or {}
            meta = obj.get("metadata") or {}
            return (
                request.namespace in (None, meta.get("namespace"))
                and int(meta.get("resourceVersion") or 0) > since
                and match(obj)
            )

        marker = None
        try:
            async with self._lock:  # every write emits under this lock: none falls in between
                marker = await bus.mark()
                backlog = self._backlog(request, bus, since)
            stream = bus.stream(since=marker)
            try:
                for event in backlog:
                    if event["type"] == "ERROR" or wanted(event):
                        yield event
                while True:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return  # timeoutSeconds: a real server ends the stream too
                    try:
                        event = await asyncio.wait_for(anext(stream), remaining)
                    except (TimeoutError, StopAsyncIteration):
                        return
                    if wanted(event):
                        yield event
            finally:
                await cast(Any, stream).aclose()
        finally:
            if marker is not None:
                await bus.unmark(marker)

    def _backlog(
        self, request: kmock.Request, bus: JournaledBus, since: int
    ) -> list[dict[str, Any]]:
        """What a new watch sends first: the journal since a version, else the current state."""
        if since:
            if bus.journal.maxlen == len(bus.journal) and since < bus.journal[0][0] - 1:
                return [
                    {
                        "type": "ERROR",
                        "object": {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "status": "Failure",
                            "code": 410,
                            "reason": "Expired",
                            "message": f"too old resource version: {since}",
                        },
                    }
                ]
            return [event for rv, event in bus.journal if rv > since]
        return [
            {"type": "ADDED", "object": obj.raw}
            for (resource, _, _), obj in self.objects.items()
            if resource == request.resource and not obj.deleted
        ]

    async def _serve_log(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        key = (POD, request.namespace, cast(str, request.name))
        pod = self._stored(key)
        if pod is None:
            raise kmock.KubernetesObjectNotFoundError()
        tail = request.params.get("tailLines")
        text = None
        if self.log_source is not None:
            text = self.log_source(
                cast(str, request.namespace),
                cast(str, request.name),
                int(tail) if tail else None,
            )
        if text is None:
            container = pod.raw["spec"]["containers"][0]["name"]
            raise _api_error(
                400,
                "BadRequest",
                f'container "{container}" in pod "{request.name}" is waiting to start: '
                "ContainerCreating",
            )
        return aiohttp.web.Response(text=text, content_type="text/plain")


# ---- the fake kubelet -------------------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """A program "inside the image", run as a local argv prefix.

    `host_flag`: the flag that sets the listen address; its wildcard value or its absence
    becomes `<host_flag> <podIP>`, emulating the pod's own network namespace.
    """

    argv: Sequence[str]
    host_flag: str | None = "--host"


class PodGone(Exception):
    """The pod was removed from the API while the kubelet worked on it."""


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


def _image_key(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    return image if (":" in last or "@" in image) else image + ":latest"


class IpPool:
    """Loopback addresses 127.A.B.C for pod IPs, A picked at random per stand-in."""

    def __init__(self) -> None:
        self._a = random.randint(20, 250)
        self._next = 0
        self._used: set[str] = set()
        self._lock = threading.Lock()

    @staticmethod
    def _free(ip: str, ports: Iterable[int]) -> bool:
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((ip, port))
                except OSError:
                    return False
        return True

    def allocate(self, ports: Iterable[int]) -> str:
        ports = list(ports)
        with self._lock:
            for _ in range(254 * 254):
                self._next = self._next % (254 * 254) + 1
                b, c = divmod(self._next - 1, 254)
                ip = f"127.{self._a}.{b + 1}.{c + 1}"
                if ip not in self._used and self._free(ip, ports):
                    self._used.add(ip)
                    return ip
        raise RuntimeError("no free loopback address for a pod")

    def release(self, ip: str) -> None:
        with self._lock:
            self._used.discard(ip)


class FakeKubelet:
    """Scheduler, PV controller and kubelet of one node, driving pods through the API."""

    def __init__(
        self,
        api_url: str,
        root: Path,
        programs: Mapping[str, Program],
        images: Mapping[str, Sequence[str]],
    ) -> None:
        cfg = client.Configuration(host=api_url)
        cfg.connection_pool_maxsize = 64
        self.api_client: Any = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api_client)
        self.root = root
        self.programs = dict(programs)
        self.images = {_image_key(k): list(v) for k, v in images.items()}
        self.ips = IpPool()
        self._workers: dict[str, PodWorker] = {}  # live pods by uid
        self._started: list[PodWorker] = []  # every worker, joined on stop
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watches: list[Any] = []
        self._threads: list[threading.Thread] = []

    # -- lifecycle --

    def start(self) -> None:
        for name, lister, handler in (
            ("pods", self.core.list_pod_for_all_namespaces, self._on_pod),
            ("claims", self.core.list_persistent_volume_claim_for_all_namespaces, self._on_claim),
        ):
            t = threading.Thread(
                target=self._watch_loop, args=(lister, handler), name=f"kubelet-{name}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for w in list(self._watches):
            w.stop()
        for t in self._threads:
            t.join(timeout=10)
        with self._lock:
            workers = list(self._started)
        for worker in workers:
            worker.request_termination(grace=2.0, shutdown=True)
        for worker in workers:
            worker.join(timeout=10)
        self.api_client.close()

    def _watch_loop(self, lister: Any, handler: Callable[[str, dict[str, Any]], None]) -> None:
        version: str | None = None  # resume where the last stream ended: nothing is missed
        while not self._stop.is_set():
            w = watch.Watch()
            self._watches.append(w)
            try:
                for event in w.stream(
                    lister,
                    resource_version=version,
                    timeout_seconds=10,
                    _request_timeout=(5, 30),
                    deserialize=False,
                ):
                    if event["type"] == "ERROR":
                        version = None  # expired: start over from the current state
                        break
                    version = event["object"]["metadata"]["resourceVersion"]
                    handler(event["type"], event["object"])
                    if self._stop.is_set():
                        break
            except Exception:  # the API server is stopping or hiccuped: rewatch
                version = None  # e.g. 410 Expired: start over from the current state
                if not self._stop.is_set():
                    log.debug("kubelet watch failed; rewatching", exc_info=True)
                    self._stop.wait(0.2)
            finally:
                self._watches.remove(w)

    # -- pods --

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if worker is None:
                if kind == "DELETED" or pod.get("status", {}).get("phase") in (
                    "Succeeded",
                    "Failed",
                ):
                    return
                node = pod.get("spec", {}).get("nodeName")
                if node and node != NODE_NAME:
                    return
                worker = PodWorker(self, pod)
                self._workers[uid] = worker
                self._started = [w for w in self._started if w.is_alive()] + [worker]
                worker.start()
        if kind == "DELETED":
            worker.request_termination(grace=0, gone=True)
        elif meta.get("deletionTimestamp"):
            worker.request_termination(grace=float(meta.get("deletionGracePeriodSeconds", 30)))

    def worker_done(self, worker: PodWorker) -> None:
        with self._lock:
            self._workers.pop(worker.uid, None)
        self.release_claims(worker.namespace)

    def logs(self, namespace: str, name: str, tail: int | None) -> str | None:
        with self._lock:
            found = [w for w in self._workers.values() if w.namespace == namespace]
        worker = next((w for w in found if w.pod_name == name), None)
        if worker is None or not worker.log_path.exists():
            return None
        if tail is None:
            return worker.log_path.read_text(errors="replace")
        text = tail_file(worker.log_path, tail)
        return text + "\n" if text else text

    # -- claims --

    def claim_dir(self, namespace: str, claim: dict[str, Any]) -> Path:
        meta = claim["metadata"]
        return self.root / "volumes" / namespace / f"{meta['name']}-{meta['uid']}"

    def bind_claim(self, namespace: str, name: str) -> tuple[Path | None, str]:
        """Bind the claim on first use; its folder, or None and why the pod cannot schedule."""
        try:
            claim = _json(
                self.core.read_namespaced_persistent_volume_claim(
                    name, namespace, _preload_content=False
                )
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None, f'persistentvolumeclaim "{name}" not found'
            raise
        if claim["metadata"].get("deletionTimestamp"):
            return None, f'persistentvolumeclaim "{name}" is being deleted'
        if claim.get("status", {}).get("phase") != "Bound":
            spec = claim["spec"]
            self.core.patch_namespaced_persistent_volume_claim(
                name,
                namespace,
                {"spec": {"volumeName": f"pvc-{claim['metadata']['uid']}"}},
                _preload_content=False,
            )
            self.core.patch_namespaced_persistent_volume_claim_status(
                name,
                namespace,
                {
                    "status": {
                        "phase": "Bound",
                        "accessModes": spec["accessModes"],
                        "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                    }
                },
                _preload_content=False,
            )
        path = self.claim_dir(namespace, claim)
        path.mkdir(parents=True, exist_ok=True)
        return path, ""

    def _on_claim(self, kind: str, claim: dict[str, Any]) -> None:
        namespace = claim["metadata"]["namespace"]
        if kind == "DELETED":
            shutil.rmtree(self.claim_dir(namespace, claim), ignore_errors=True)
        elif claim["metadata"].get("deletionTimestamp"):
            self.release_claims(namespace)

    def release_claims(self, namespace: str) -> None:
        """PVC protection: drop the finalizer of Terminating claims no live pod uses."""
        if self._stop.is_set():
            return
        try:
            claims = _json(
                self.core.list_namespaced_persistent_volume_claim(namespace, _preload_content=False)
            )["items"]
            terminating = [
                c
                for c in claims
                if c["metadata"].get("deletionTimestamp")
                and PVC_PROTECTION in (c["metadata"].get("finalizers") or [])
            ]
            if not terminating:
                return
            pods = _json(self.core.list_namespaced_pod(namespace, _preload_content=False))["items"]
            used = {
                v["persistentVolumeClaim"]["claimName"]
                for p in pods
                if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
                for v in p.get("spec", {}).get("volumes") or []
                if v.get("persistentVolumeClaim")
            }
            for c in terminating:
                name = c["metadata"]["name"]
                if name not in used:
                    rest = [f for f in c["metadata"]["finalizers"] if f != PVC_PROTECTION]
                    self.core.patch_namespaced_persistent_volume_claim(
                        name,
                        namespace,
                        {"metadata": {"finalizers": rest or None}},
                        _preload_content=False,
                    )
        except client.ApiException as exc:
            if exc.status != 404:
                log.warning("pvc protection check failed: %s", exc)
        except urllib3.exceptions.HTTPError as exc:
            if not self._stop.is_set():
                log.warning("pvc protection check failed: %s", exc)


WILDCARDS = ("0.0.0.0", "::", "[::]")


class PodWorker(threading.Thread):
    """Runs one pod: schedule, pull, start, probe, report the exit, stop on deletion."""

    def __init__(self, kubelet: FakeKubelet, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"kubelet-pod-{meta['name']}", daemon=True)
        self.kubelet = kubelet
        self.pod = pod
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.container: dict[str, Any] = pod["spec"]["containers"][0]
        self.dir = kubelet.root / "pods" / f"{self.namespace}_{self.pod_name}_{self.uid}"
        self.log_path = self.dir / "container.log"
        self.pod_ip = ""
        self.conditions: dict[str, dict[str, str]] = {}
        self._terminate = threading.Event()
        self._grace = 30.0
        self._gone = False
        self._shutdown = False
        self._wake_r, self._wake_w = os.pipe()
        self._fd_lock = threading.Lock()
        self._fds_closed = False
        self._proc: subprocess.Popen[bytes] | None = None

    # -- control from the watch thread --

    def request_termination(self, grace: float, gone: bool = False, shutdown: bool = False) -> None:
        self._grace = min(self._grace, grace) if self._terminate.is_set() else grace
        self._gone = self._gone or gone
        self._shutdown = self._shutdown or shutdown
        self._terminate.set()
        with self._fd_lock:
            if not self._fds_closed:
                os.write(self._wake_w, b"x")

    # -- status reports --

    def _set_condition(self, kind: str, ok: bool, reason: str = "", message: str = "") -> None:
        cond = {
            "type": kind,
            "status": "True" if ok else "False",
            "lastTransitionTime": now_rfc3339(),
        }
        old = self.conditions.get(kind)
        if old is not None and old["status"] == cond["status"]:
            cond["lastTransitionTime"] = old["lastTransitionTime"]
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        self.conditions[kind] = cond

    def _container_status(
        self, state: dict[str, Any], ready: bool, started: bool
    ) -> dict[str, Any]:
        status = {
            "name": self.container["name"],
            "image": self.container["image"],
            "imageID": "",
            "ready": ready,
            "restartCount": 0,
            "started": started,
            "state": state,
        }
        if self._proc is not None:
            status["containerID"] = f"standin://{self._proc.pid}"
            status["imageID"] = f"standin://{_image_key(self.container['image'])}"
        return status

    def _report(self, phase: str, container: dict[str, Any] | None, **extra: Any) -> None:
        if self._gone or self._shutdown:
            return
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": list(self.conditions.values()),
            **extra,
        }
        if container is not None:
            status["containerStatuses"] = [container]
        try:
            self.kubelet.core.patch_namespaced_pod_status(
                self.pod_name, self.namespace, {"status": status}, _preload_content=False
            )
        except client.ApiException as exc:
            if exc.status == 404:
                raise PodGone() from None
            raise

    def _waiting(self, reason: str, message: str = "") -> dict[str, Any]:
        state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        return self._container_status(state, ready=False, started=False)

    # -- the pod's life --

    def run(self) -> None:
        try:
            self._live()
        except PodGone:
            pass
        except Exception:  # one broken pod must not take the kubelet down
            log.exception("kubelet worker for pod %s/%s failed", self.namespace, self.pod_name)
            self._terminate.wait()
        finally:
            self._kill(self._grace if not self._shutdown else min(self._grace, 2.0))
            if not self._gone and not self._shutdown:
                with contextlib.suppress(client.ApiException):
                    self.kubelet.core.delete_namespaced_pod(
                        self.pod_name,
                        self.namespace,
                        grace_period_seconds=0,
                        _preload_content=False,
                    )
            if self.pod_ip:
                self.kubelet.ips.release(self.pod_ip)
            with self._fd_lock:
                self._fds_closed = True
                os.close(self._wake_r)
                os.close(self._wake_w)
            shutil.rmtree(self.dir, ignore_errors=True)
            self.kubelet.worker_done(self)

    def _live(self) -> None:
        mounts = self._schedule()
        if mounts is None:
            return
        self._set_condition("Initialized", True)
        self._set_condition("ContainersReady", False, "ContainersNotReady")
        self._set_condition("Ready", False, "ContainersNotReady")
        ports = [p["containerPort"] for p in self.container.get("ports") or []]
        self.pod_ip = self.kubelet.ips.allocate(ports)
        ips = {
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": now_rfc3339(),
        }
        self._report("Pending", self._waiting("ContainerCreating"), **ips)
        entrypoint = self._pull()
        if entrypoint is None:
            return
        argv = self._argv(entrypoint, mounts)
        env = self._env(mounts)
        self.dir.mkdir(parents=True, exist_ok=True)
        started_at = now_rfc3339()
        try:
            with self.log_path.open("ab") as out:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.dir,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            self.log_path.write_text(f"exec {argv[0]}: {exc.strerror or exc}\n")
            terminated = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": f"exec: {exc}",
                    "startedAt": started_at,
                    "finishedAt": now_rfc3339(),
                }
            }
            self._report("Failed", self._container_status(terminated, False, False))
            self._terminate.wait()
            return
        self._run_container(started_at)

    def _schedule(self) -> dict[str, Path] | None:
        """Bind the pod and its claims; the mount path → folder map, None if deleted first."""
        spec = self.pod["spec"]
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in spec.get("volumes") or []
            if v.get("persistentVolumeClaim")
        }
        delay = 0.05
        while True:
            folders: dict[str, Path] = {}
            why = ""
            for volume, claim in claims.items():
                path, why = self.kubelet.bind_claim(self.namespace, claim)
                if path is None:
                    break
                folders[volume] = path
            if not why:
                break
            self._set_condition("PodScheduled", False, "Unschedulable", why)
            self._report("Pending", None)
            if self._terminate.wait(delay):
                return None
            delay = min(delay * 2, 1.0)
        try:
            self.kubelet.core.patch_namespaced_pod(
                self.pod_name,
                self.namespace,
                {"spec": {"nodeName": NODE_NAME}},
                _preload_content=False,
            )
        except client.ApiException as exc:
            if exc.status == 404:
                raise PodGone() from None
            raise
        self._set_condition("PodScheduled", True)
        mounts: dict[str, Path] = {}
        for mount in self.container.get("volumeMounts") or []:
            if mount["name"] in folders:
                mounts[mount["mountPath"].rstrip("/") or "/"] = folders[mount["name"]]
        return None if self._terminate.is_set() else mounts

    def _pull(self) -> list[str] | None:
        image = self.container["image"]
        if not _IMAGE_REF.match(image):
            msg = f'Failed to apply default image tag "{image}": invalid reference format'
            self._report("Pending", self._waiting("InvalidImageName", msg))
            self._terminate.wait()
            return None
        entrypoint = self.kubelet.images.get(_image_key(image))
        if entrypoint is not None:
            return entrypoint
        message = (
            f'Failed to pull image "{image}": rpc error: code = NotFound desc = '
            "not in the stand-in's available images"
        )
        backoff = 1.0
        while True:
            self._report("Pending", self._waiting("ErrImagePull", message))
            if self._terminate.wait(backoff):
                return None
            back_off = self._waiting("ImagePullBackOff", f'Back-off pulling "{image}"')
            self._report("Pending", back_off)
            if self._terminate.wait(backoff):
                return None
            backoff = min(backoff * 2, 10.0)

    def _map_path(self, value: str, mounts: Mapping[str, Path]) -> str:
        for mount, folder in mounts.items():
            if value == mount:
                return str(folder)
            if value.startswith(mount + "/"):
                return str(folder) + value[len(mount) :]
        return value

    def _argv(self, entrypoint: Sequence[str], mounts: Mapping[str, Path]) -> list[str]:
        command = list(self.container.get("command") or entrypoint)
        argv = [self._map_path(a, mounts) for a in [*command, *self.container.get("args", [])]]
        program = self.kubelet.programs.get(argv[0]) if argv else None
        if program is None:
            return argv
        argv = [*program.argv, *argv[1:]]
        flag = program.host_flag
        if flag is not None:
            if flag in argv[:-1]:
                at = argv.index(flag) + 1
                if argv[at] in WILDCARDS:
                    argv[at] = self.pod_ip
            else:
                argv += [flag, self.pod_ip]
        return argv

    def _env(self, mounts: Mapping[str, Path]) -> dict[str, str]:
        env = {**os.environ, "HOSTNAME": self.pod_name}
        fields = {
            "metadata.name": self.pod_name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": NODE_NAME,
            "status.podIP": self.pod_ip,
            "status.hostIP": "127.0.0.1",
        }
        for var in self.container.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath")
            value = fields.get(ref, "") if ref else var.get("value", "")
            env[var["name"]] = self._map_path(value, mounts)
        return env

    def _run_container(self, started_at: str) -> None:
        proc = self._proc
        assert proc is not None
        running = {"running": {"startedAt": started_at}}
        probe = self.container.get("readinessProbe")
        ready = probe is None
        self._set_condition("ContainersReady", ready, "" if ready else "ContainersNotReady")
        self._set_condition("Ready", ready, "" if ready else "ContainersNotReady")
        self._report("Running", self._container_status(running, ready, True))
        period = float((probe or {}).get("periodSeconds", 10))
        next_probe = time.monotonic() + float((probe or {}).get("initialDelaySeconds", 0))
        successes = failures = 0
        pidfd = os.pidfd_open(proc.pid)
        try:
            while True:
                timeout = None if probe is None else max(0.0, next_probe - time.monotonic())
                readable, _, _ = select.select([pidfd, self._wake_r], [], [], timeout)
                if self._wake_r in readable:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 64)
                if self._terminate.is_set():
                    return
                if pidfd in readable:
                    break
                if probe is not None and time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + period
                    if self._probe(probe):
                        successes, failures = successes + 1, 0
                    else:
                        successes, failures = 0, failures + 1
                    now_ready = (
                        successes >= int(probe.get("successThreshold", 1))
                        if not ready
                        else failures < int(probe.get("failureThreshold", 3))
                    )
                    if now_ready != ready:
                        ready = now_ready
                        reason = "" if ready else "ContainersNotReady"
                        self._set_condition("ContainersReady", ready, reason)
                        self._set_condition("Ready", ready, reason)
                        self._report("Running", self._container_status(running, ready, True))
        finally:
            os.close(pidfd)
        code = proc.wait()
        exit_code = code if code >= 0 else 128 - code
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started_at,
            "finishedAt": now_rfc3339(),
            "containerID": f"standin://{proc.pid}",
        }
        if code < 0:
            terminated["signal"] = -code
        for kind in ("ContainersReady", "Ready"):
            self._set_condition(kind, False, "PodCompleted" if code == 0 else "PodFailed")
        self._report(
            "Succeeded" if code == 0 else "Failed",
            self._container_status({"terminated": terminated}, False, False),
        )
        self._terminate.wait()

    def _probe(self, probe: Mapping[str, Any]) -> bool:
        get = probe.get("httpGet")
        if not get:
            return True  # exec / tcpSocket probes are not emulated: count as passing
        port = get.get("port")
        if isinstance(port, str) and not port.isdigit():
            named = {p.get("name"): p["containerPort"] for p in self.container.get("ports") or []}
            port = named.get(port)
        if port is None:
            return False
        conn = http.client.HTTPConnection(
            get.get("host") or self.pod_ip, int(port), timeout=float(probe.get("timeoutSeconds", 1))
        )
        try:
            conn.request("GET", get.get("path", "/"))
            return 200 <= conn.getresponse().status < 400
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _kill(self, grace: float) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


# ---- the bundle ---------------------------------------------------------------------------------


class KubeStandin:
    """API server (in a background thread with its own event loop) + kubeconfig + kubelet.

    Use as a context manager; `kubeconfig` is a file the official client (and the adapter)
    loads like any other. Everything it starts, it stops; everything it writes lives in
    `workdir` and is removed on stop.
    """

    def __init__(
        self,
        workdir: Path,
        programs: Mapping[str, Program],
        images: Mapping[str, Sequence[str]] | None = None,
        namespace: str = "default",
    ) -> None:
        self.workdir = Path(workdir)
        self.programs = programs
        self.images = images if images is not None else {"grid:latest": ["grid-node"]}
        self.namespace = namespace
        self.api = StandinApiServer()
        self.kubelet: FakeKubelet | None = None
        self.url = ""
        self.kubeconfig = self.workdir / "kubeconfig"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> KubeStandin:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._serve, name="k8s-standin-api", daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError(f"the Kubernetes stand-in did not start: {self._error!r}")
        self._write_kubeconfig()
        self.kubelet = FakeKubelet(self.url, self.workdir, self.programs, self.images)
        self.api.log_source = self.kubelet.logs
        self.kubelet.start()
        return self

    def stop(self) -> None:
        if self.kubelet is not None:
            self.kubelet.stop()
            self.kubelet = None
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        shutil.rmtree(self.workdir / "pods", ignore_errors=True)
        shutil.rmtree(self.workdir / "volumes", ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.kubeconfig.unlink()

    def __enter__(self) -> KubeStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        async with self.api:
            runner = aiohttp.web.ServerRunner(aiohttp.web.Server(self.api), shutdown_timeout=1.0)
            await runner.setup()
            site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
            self._ready.set()
            try:
                await self._stopped.wait()
            finally:
                await runner.cleanup()

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "grid-standin",
            "clusters": [{"name": "grid-standin", "cluster": {"server": self.url}}],
            "users": [{"name": "grid-standin", "user": {"token": "standin"}}],
            "contexts": [
                {
                    "name": "grid-standin",
                    "context": {
                        "cluster": "grid-standin",
                        "user": "grid-standin",
                        "namespace": self.namespace,
                    },
                }
            ],
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))
