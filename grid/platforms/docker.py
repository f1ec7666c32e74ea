"""Docker: one container per node, a named volume per node for its data, exit events.

A node's container is named `<name_prefix><node_id>` and carries the standard Grid labels
(`naming.node_labels`) plus `grid.port`, the port its node listens on, so a restarted
agent rebuilds every handle from the daemon alone. Its data lives in the volume
`<volume_prefix><node_id>` mounted at `data_path` (or in the spec's `data_dir`, bind-mounted
there), removed on stop unless `retain_data` is set.

The node's argv (`node_argv` of the config's command, else the spec's) replaces the image's
ENTRYPOINT and CMD, so any image holding the program works, the Grid image included.
With the `host` network the node listens on a free host port picked here (or the spec's);
on any other network (`bridge` or a user-defined one) it listens on `container_port`, which
Docker publishes on a host port (the spec's, or one Docker picks) reported in the endpoint.
Exits are reported from Docker's event stream; if that stream cannot be used the adapter
falls back to polling container states like every other adapter.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import docker
import docker.errors
import requests
from pydantic import Field, field_validator

from grid.core.errors import PlatformError, PlatformUnavailableError, SpawnError
from grid.core.naming import LABEL_AGENT_ID, LABEL_MANAGED, LABEL_NODE_ID, LABEL_PORT, node_labels
from grid.core.ports import PortAllocator
from grid.platforms.base import (
    ExitCallback,
    HostPortConfig,
    NodeHandle,
    NodeSpec,
    Platform,
    PlatformConfig,
    WorkloadState,
    WorkloadStatus,
    node_argv,
)
from grid.platforms.process import describe_exit

log = logging.getLogger(__name__)

#: Label holding the port the node listens on inside its container (the host port on `host`).


_GONE = ("exited", "dead", "removing")
_LIVE = ("running", "paused")
_MOUNT_MODES = ("ro", "rw")

NodeIds = Callable[[], list[str]]  # (an alias: `list` is a method name in the class below)


class DockerConfig(HostPortConfig):
    image: str = Field("grid:latest", description="image of nodes whose spec names none")
    base_url: str | None = Field(
        None, description="daemon address, e.g. unix:///var/run/docker.sock; unset: DOCKER_HOST"
    )
    api_timeout: float = Field(60.0, gt=0, description="seconds for one call to the daemon")
    network: str = Field("host", description="host, bridge, or a user-defined network")
    host: str = Field("127.0.0.1", description="address of the nodes in their endpoints")
    publish_host: str | None = Field(
        None,
        description="host interface that published node ports are bound to on a non-host "
        "network (an IP address; unset: `host`, loopback by default)",
    )
    container_port: int = Field(
        8000, gt=0, lt=65536, description="port the node listens on inside a non-host network"
    )
    bridge_args: list[str] = Field(
        ["--host", "0.0.0.0"],
        description="added to the command on a non-host network so the node listens on "
        "every interface of its namespace (published ports reach it)",
    )
    command: list[str] | None = Field(
        None, description="node argv inside the container; unset: the spec's (GRID_NODE_COMMAND)"
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="environment of every node (the spec's env wins)"
    )
    name_prefix: str = Field("grid-node-", description="container name = prefix + node id")
    volume_prefix: str = Field("grid-data-", description="data volume name = prefix + node id")
    data_path: str = Field("/data", description="where the node's data is mounted")
    retain_data: bool = Field(False, description="keep a node's data volume when it stops")
    mounts: list[str] = Field(
        default_factory=list, description='extra bind mounts, "src:dst" or "src:dst:ro|rw"'
    )
    user: str | None = Field(None, description="user[:group] the node runs as")
    init: bool = Field(True, description="run docker-init as PID 1 (signals, zombie reaping)")
    exit_check: float = Field(
        0.0, ge=0, description="seconds spawn watches for an immediate exit (0: one check)"
    )

    @field_validator("mounts")
    @classmethod
    def _check_mounts(cls, mounts: list[str]) -> list[str]:
        for mount in mounts:
            parts = mount.split(":")
            if len(parts) not in (2, 3) or not all(parts[:2]):
                raise ValueError(f'{mount!r} is not "src:dst" or "src:dst:ro|rw"')
            if not parts[1].startswith("/"):
                raise ValueError(f"{mount!r}: the container path must be absolute")
            if len(parts) == 3 and parts[2] not in _MOUNT_MODES:
                raise ValueError(f"{mount!r}: the mode must be ro or rw")
        return mounts

    @field_validator("network")
    @classmethod
    def _check_network(cls, network: str) -> str:
        if network == "none" or network.startswith("container:"):
            raise ValueError(f"network {network!r} gives the node no reachable port")
        return network


def describe_container_exit(state: dict[str, Any]) -> str:
    """Why a container ended, from its inspected `State`."""
    code = state.get("ExitCode")
    if state.get("OOMKilled"):
        return f"killed: out of memory (exit code {code})"
    if isinstance(code, int) and 128 < code < 160:  # the shell convention for a signal
        return f"{describe_exit(128 - code)} (exit code {code})"
    return describe_exit(code if isinstance(code, int) else None)


def parse_docker_time(text: str) -> float:
    """A Docker RFC 3339 timestamp (nanoseconds, Z) as a unix time; 0.0 if unset."""
    try:
        return max(0.0, datetime.fromisoformat(text).timestamp())  # never started: year 1
    except (TypeError, ValueError, OverflowError):
        return 0.0


def published_port(attrs: dict[str, Any], container_port: int) -> int | None:
    """The host port Docker publishes `container_port` on, from an inspected container."""
    bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(
        f"{container_port}/tcp"
    )
    for binding in bindings or ():
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


class DockerPlatform(Platform):
    name = "docker"
    config_model = DockerConfig
    config: DockerConfig

    def __init__(self, config: PlatformConfig, agent_id: str) -> None:
        super().__init__(config, agent_id)
        self._client: Any = None
        self._lock = threading.Lock()
        self._events: Any = None  # the open event stream, closed by close()
        self._ports = PortAllocator("", self.config.port_range)

    # ---- daemon access -------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The docker client, made on first use (an agent may start before its daemon)."""
        with self._lock:
            if self._client is None:
                try:
                    if self.config.base_url:
                        self._client = docker.DockerClient(
                            base_url=self.config.base_url,
                            timeout=math.ceil(self.config.api_timeout),
                            max_pool_size=32,
                        )
                    else:
                        self._client = docker.from_env(
                            timeout=math.ceil(self.config.api_timeout), max_pool_size=32
                        )
                except docker.errors.DockerException as exc:
                    raise PlatformUnavailableError(f"docker daemon unreachable: {exc}") from None
            return self._client

    @contextlib.contextmanager
    def _daemon(self, action: str) -> Iterator[None]:
        """Map daemon failures: unreachable or failing daemon -> temporary, refusal -> error."""
        try:
            yield
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise PlatformUnavailableError(
                f"docker daemon unreachable while {action}: {exc}"
            ) from None
        except docker.errors.APIError as exc:
            message = f"docker daemon failed while {action}: {exc.explanation or exc}"
            if exc.is_server_error():
                raise PlatformUnavailableError(message) from None
            raise PlatformError(message) from None

    # ---- names -----------------------------------------------------------------------------

    def container_name(self, node_id: str) -> str:
        return f"{self.config.name_prefix}{node_id}"

    def volume_name(self, node_id: str) -> str:
        return f"{self.config.volume_prefix}{node_id}"

    def _find(self, node_id: str) -> Any:
        """The managed container of `node_id`, or None."""
        with self._daemon(f"looking up node {node_id}"):
            try:
                container = self.client.containers.get(self.container_name(node_id))
            except docker.errors.NotFound:
                return None
        if container.labels.get(LABEL_MANAGED) != "true":
            return None  # same name, not ours: never touch it
        return container

    # ---- lifecycle -------------------------------------------------------------------------

    def spawn(self, spec: NodeSpec) -> NodeHandle:
        existing = self._find(spec.node_id)
        if existing is not None:
            if existing.status in _LIVE:
                return self._handle_from(existing.attrs)  # a second delivery of the same spawn
            self._remove_container(existing)  # what is left of a crashed run

        image = spec.image or self.config.image
        host_mode = self.config.network == "host"
        if host_mode:
            listen_port = spec.port or self._free_port()
            command = self.config.command or spec.command
        else:
            listen_port = self.config.container_port
            command = [*(self.config.command or spec.command), *self.config.bridge_args]
        labels = {
            **spec.labels,
            **node_labels(spec.node_id, spec.agent_id, spec.pool),
            LABEL_PORT: str(listen_port),
        }
        binds = list(self.config.mounts)
        volume = None if spec.data_dir else self.volume_name(spec.node_id)
        made_volume = False
        binds.append(f"{spec.data_dir or volume}:{self.config.data_path}:rw")

        container = None
        try:
            with self._daemon(f"starting node {spec.node_id}"):
                if volume is not None:
                    made_volume = self._ensure_volume(volume, labels)
                try:
                    argv = node_argv(command, spec.node_id, listen_port, self.config.data_path)
                    container = self.client.containers.create(
                        image,
                        argv[1:],
                        entrypoint=argv[:1],  # the argv as is, whatever the image's ENTRYPOINT
                        name=self.container_name(spec.node_id),
                        labels=labels,
                        environment={**self.config.env, **spec.env},
                        network_mode=self.config.network,
                        ports=None if host_mode else self._published(listen_port, spec.port),
                        volumes=binds,
                        mem_limit=f"{spec.memory_mb}m" if spec.memory_mb else None,
                        nano_cpus=round(spec.cpus * 1e9) if spec.cpus else None,
                        user=self.config.user,
                        init=self.config.init,
                        stdin_open=False,
                        tty=False,
                    )
                    container.start()
                except docker.errors.ImageNotFound:
                    raise SpawnError(
                        f"image {image!r} is not on the docker daemon: build or pull it first"
                    ) from None
                except docker.errors.APIError as exc:
                    if exc.status_code in (502, 503, 504):
                        raise
                    raise SpawnError(
                        f"docker could not start node {spec.node_id} from {image!r}: "
                        f"{exc.explanation or exc}"
                    ) from None
                self._check_started(container, spec.node_id)
                return self._handle_from(container.attrs)
        except BaseException as exc:  # a failed spawn leaves nothing behind, whatever failed
            if container is None and not isinstance(exc, SpawnError):
                # e.g. a create that timed out on our side but happened on the daemon's
                with contextlib.suppress(Exception):
                    container = self._find(spec.node_id)
            if container is not None:
                with contextlib.suppress(Exception):
                    self._remove_container(container)
            if made_volume:
                with contextlib.suppress(Exception):
                    self._remove_volume(str(volume))
            raise

    def _ensure_volume(self, name: str, labels: dict[str, str]) -> bool:
        """Create the data volume unless it exists (retained data); True if created here."""
        try:
            self.client.volumes.get(name)
            return False
        except docker.errors.NotFound:
            self.client.volumes.create(name, labels=labels)
            return True

    def _check_started(self, container: Any, node_id: str) -> None:
        """Raise SpawnError if the container ended at once (within `exit_check` seconds)."""
        deadline = time.monotonic() + self.config.exit_check
        while True:
            container.reload()
            if container.status in _GONE:
                state = container.attrs["State"]
                lines = container.logs(tail=5).decode("utf-8", "replace").strip()
                detail = lines.replace("\n", " | ") or state.get("Error") or "no output"
                raise SpawnError(
                    f"node {node_id} {describe_container_exit(state)} at once: {detail}"
                )
            if time.monotonic() >= deadline:
                return
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _published(self, listen_port: int, host_port: int) -> dict[str, tuple[str, int | None]]:
        """Docker's port map: the node's port on one host interface only, never on all."""
        interface = self.config.publish_host or self.config.host
        return {f"{listen_port}/tcp": (interface, host_port or None)}

    def _free_port(self) -> int:
        try:
            return self._ports.allocate()
        except OSError as exc:
            raise SpawnError(str(exc)) from None

    def _handle_from(self, attrs: dict[str, Any]) -> NodeHandle:
        labels: dict[str, str] = dict(attrs["Config"].get("Labels") or {})
        port = int(labels.get(LABEL_PORT, 0))
        if attrs["HostConfig"].get("NetworkMode") != "host":
            port = published_port(attrs, port) or 0
        state = attrs.get("State") or {}
        return NodeHandle(
            node_id=labels[LABEL_NODE_ID],
            platform=self.name,
            ref=attrs["Id"],
            endpoint=f"http://{self.config.host}:{port}",
            port=port,
            started_at=parse_docker_time(state.get("StartedAt", "")),
            pid=state.get("Pid") or None,
            meta={"container": attrs["Name"].lstrip("/"), "image": attrs["Config"].get("Image")},
            labels=labels,
        )

    def stop(self, node_id: str, grace: float) -> None:
        container = self._find(node_id)
        if container is not None:
            with (
                self._daemon(f"stopping node {node_id}"),
                contextlib.suppress(docker.errors.NotFound),
            ):
                container.stop(timeout=max(0, math.ceil(grace)))
            self._remove_container(container)
        if not self.config.retain_data:
            self._remove_volume(self.volume_name(node_id), node_id)

    def _remove_container(self, container: Any) -> None:
        with self._daemon(f"removing container {container.name}"):
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: removal already in progress
                    raise

    def _remove_volume(self, name: str, node_id: str | None = None) -> None:
        """Remove a data volume; with `node_id`, only if its labels say it is that node's."""
        with self._daemon(f"removing volume {name}"), contextlib.suppress(docker.errors.NotFound):
            volume = self.client.volumes.get(name)
            labels = volume.attrs.get("Labels") or {}
            mine = labels.get(LABEL_MANAGED) == "true" and labels.get(LABEL_NODE_ID) == node_id
            if node_id is not None and not mine:
                log.warning("not removing volume %s: it is not node %s's", name, node_id)
                return
            volume.remove(force=True)

    def status(self, node_id: str) -> WorkloadStatus:
        container = self._find(node_id)
        if container is None:
            return WorkloadStatus(WorkloadState.MISSING, detail="no such container")
        return self._status_of(container.attrs["State"])

    @staticmethod
    def _status_of(state: dict[str, Any]) -> WorkloadStatus:
        status = state.get("Status", "")
        if status in _LIVE:
            return WorkloadStatus(WorkloadState.RUNNING, detail=status)
        if status in _GONE:
            code = state.get("ExitCode")
            return WorkloadStatus(
                WorkloadState.EXITED,
                exit_code=code if isinstance(code, int) else None,
                detail=describe_container_exit(state),
            )
        return WorkloadStatus(WorkloadState.STARTING, detail=status)  # created, restarting

    def _handles(self, containers: Iterable[Any]) -> list[NodeHandle]:
        handles = []
        for container in containers:
            try:
                handles.append(self._handle_from(container.attrs))
            except (KeyError, ValueError) as exc:
                log.warning("skipping container %s: bad labels (%s)", container.name, exc)
        return handles

    def list(self, labels: dict[str, str]) -> list[NodeHandle]:
        wanted = {LABEL_MANAGED: "true", **labels}
        with self._daemon("listing containers"):
            found = self.client.containers.list(
                filters={"label": [f"{k}={v}" for k, v in wanted.items()]}
            )
            return self._handles(found)

    def logs(self, node_id: str, lines: int = 100) -> str:
        if lines <= 0:
            return ""
        container = self._find(node_id)
        if container is None:
            return ""
        with self._daemon(f"reading logs of node {node_id}"):
            try:
                data: bytes = container.logs(tail=lines, stdout=True, stderr=True)
            except docker.errors.NotFound:
                return ""
        return data.decode("utf-8", "replace")

    # ---- exit watch: Docker's event stream, polling as a fallback ----------------------------

    def watch(self, node_ids: NodeIds, on_exit: ExitCallback) -> None:
        if self._watch_thread is not None:
            return
        self._watch_thread = threading.Thread(
            target=self._watch_events, args=(node_ids, on_exit), name="docker-watch", daemon=True
        )
        self._watch_thread.start()

    def _watch_events(self, node_ids: NodeIds, on_exit: ExitCallback) -> None:
        try:
            stream = self.client.events(
                decode=True,
                filters={
                    "type": "container",
                    "event": "die",
                    "label": [f"{LABEL_MANAGED}=true", f"{LABEL_AGENT_ID}={self.agent_id}"],
                },
            )
        except (PlatformError, docker.errors.DockerException, requests.RequestException) as exc:
            self._fall_back(node_ids, on_exit, f"cannot subscribe to docker events: {exc}")
            return
        with self._lock:
            self._events = stream
        if self._watch_stop.is_set():
            stream.close()
            return
        swept = self._sweep(node_ids, on_exit)
        try:
            for event in stream:
                actor = event.get("Actor") or {}
                attributes = actor.get("Attributes") or {}
                node_id = attributes.get(LABEL_NODE_ID)
                mine = attributes.get(LABEL_AGENT_ID) == self.agent_id
                if actor.get("ID") in swept:
                    continue  # its death was reported by the sweep already
                if node_id and mine and node_id in node_ids():
                    on_exit(node_id, self._exit_status(node_id, attributes))
        except Exception as exc:  # noqa: BLE001 - any failure of the stream means: poll instead
            reason = f"docker event stream failed: {exc}"
        else:
            reason = "docker event stream ended"
        if not self._watch_stop.is_set():
            self._fall_back(node_ids, on_exit, reason)

    def _exit_status(self, node_id: str, attributes: dict[str, str]) -> WorkloadStatus:
        """Status of a container that just died: inspected (OOM shows), else from the event."""
        try:
            status = self.status(node_id)
            if status.state == WorkloadState.EXITED:
                return status
        except PlatformError:
            pass
        code = int(attributes["exitCode"]) if attributes.get("exitCode", "").isdigit() else None
        return WorkloadStatus(
            WorkloadState.EXITED, exit_code=code, detail=describe_container_exit({"ExitCode": code})
        )

    def _sweep(self, node_ids: NodeIds, on_exit: ExitCallback) -> set[str]:
        """Report watched nodes that ended before the subscription; their container ids."""
        reported = set()
        for node_id in node_ids():
            try:
                container = self._find(node_id)
            except PlatformError:
                continue
            if container is None:
                on_exit(node_id, WorkloadStatus(WorkloadState.MISSING, detail="no such container"))
                continue
            status = self._status_of(container.attrs["State"])
            if status.state == WorkloadState.EXITED:
                reported.add(container.id)
                on_exit(node_id, status)
        return reported

    def _fall_back(self, node_ids: NodeIds, on_exit: ExitCallback, why: str) -> None:
        log.warning("%s; polling container states every %ss instead", why, self.watch_interval)
        self._watch_thread = None
        super().watch(node_ids, on_exit)

    def close(self) -> None:
        self._watch_stop.set()
        with self._lock:
            stream, self._events = self._events, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        super().close()
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
