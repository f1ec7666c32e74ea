"""The Platform interface every adapter implements, and the types it speaks.

An adapter turns a `NodeSpec` into a running workload and gives back a `NodeHandle`.
It knows nothing of Redis, Celery or agents: the agent runtime drives it.
"""

from __future__ import annotations

import builtins
import functools
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

from grid.core.naming import check_id


@dataclass(frozen=True)
class NodeSpec:
    """What to run for one node, platform-neutral."""

    node_id: str
    agent_id: str
    pool: str
    command: list[str]  # the node program; see node_argv for how its flags are added
    port: int = 0
    data_dir: str = ""
    image: str | None = None
    memory_mb: int | None = None
    cpus: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


PLACEHOLDERS = ("{port}", "{data_dir}", "{node_id}", "{host}")


def node_argv(
    command: list[str], node_id: str, port: int, data_dir: str, host: str = ""
) -> list[str]:
    """The full argv of a node: placeholders filled in, or the standard flags appended.

    Every adapter calls this, with the port and data path as seen from inside its workload
    (a container's `/data`, a host folder for a process). `host`, when given, is the address
    the node must listen on (`--host`, or `{host}`).
    """
    if any(ph in arg for arg in command for ph in PLACEHOLDERS):
        values = {"port": str(port), "data_dir": data_dir, "node_id": node_id, "host": host}
        return [arg.format(**values) for arg in command]
    listen = ["--host", host] if host else []
    return [*command, "--port", str(port), "--data-dir", data_dir, "--node-id", node_id, *listen]


@dataclass
class NodeHandle:
    """What a platform tells about one running workload."""

    node_id: str
    platform: str
    ref: str  # pid, container id, pod name or unit name
    endpoint: str  # http://host:port
    port: int
    started_at: float
    pid: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(
        default_factory=dict
    )  # as stamped at spawn (adoption reads them)


class WorkloadState(StrEnum):
    RUNNING = "running"
    STARTING = "starting"
    EXITED = "exited"
    MISSING = "missing"


@dataclass(frozen=True)
class WorkloadStatus:
    state: WorkloadState
    exit_code: int | None = None
    detail: str = ""


ExitCallback = Callable[[str, WorkloadStatus], None]


class PlatformConfig(BaseModel):
    """Settings an adapter reads from the agent config file; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class HostPortConfig(PlatformConfig):
    """Settings of adapters whose nodes listen on a host port."""

    port_range: tuple[int, int] | None = None  # host ports to use, e.g. [20000, 20999]

    @field_validator("port_range")
    @classmethod
    def _ordered(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not 1 <= value[0] <= value[1] <= 65535:
            raise ValueError("must be [low, high] with 1 <= low <= high <= 65535")
        return value


#: Methods taking a node id first, whose id every adapter's override has checked first.
ID_METHODS = ("stop", "status", "logs", "adopt")


def _checking_id(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def checked(self: Platform, node_id: object, *args: Any, **kwargs: Any) -> Any:
        return method(self, check_id(node_id), *args, **kwargs)

    return checked


def _checking_spec(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def checked(self: Platform, spec: NodeSpec, *args: Any, **kwargs: Any) -> Any:
        check_id(spec.node_id)
        check_id(spec.agent_id, "agent id")
        check_id(spec.pool, "pool")
        return method(self, spec, *args, **kwargs)

    return checked


class Platform(ABC):
    """Start, stop, inspect and find node workloads on one kind of infrastructure.

    Every adapter's `spawn`, `stop`, `status`, `logs` and `adopt` are wrapped when its class
    is defined so that they first check the ids they are given (UnsafeInputError): no
    adapter, present or future, can build a name or a path from an unchecked id.
    """

    name: ClassVar[str]
    config_model: ClassVar[type[PlatformConfig]] = PlatformConfig
    #: Seconds between status polls for adapters that cannot be told of exits.
    watch_interval: ClassVar[float] = 1.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ID_METHODS:
            if name in cls.__dict__:
                setattr(cls, name, _checking_id(cls.__dict__[name]))
        if "spawn" in cls.__dict__:
            cls.spawn = _checking_spec(cls.__dict__["spawn"])  # type: ignore[method-assign]

    def __init__(self, config: PlatformConfig, agent_id: str) -> None:
        self.config = config
        self.agent_id = agent_id
        self._watch_stop = threading.Event()
        self._watch_thread: threading.Thread | None = None

    @abstractmethod
    def spawn(self, spec: NodeSpec) -> NodeHandle:
        """Start the workload; return once it is started and its endpoint is known.

        Raises SpawnError (permanent) or PlatformUnavailableError (temporary); a failed
        spawn leaves nothing behind.
        """

    @abstractmethod
    def stop(self, node_id: str, grace: float) -> None:
        """Stop gracefully, then forcibly after `grace` seconds, and remove. Idempotent."""

    @abstractmethod
    def status(self, node_id: str) -> WorkloadStatus:
        """Current state of the workload of `node_id`."""

    @abstractmethod
    def list(self, labels: dict[str, str]) -> list[NodeHandle]:
        """Workloads of this adapter carrying all of `labels` (used for adoption)."""

    @abstractmethod
    def logs(self, node_id: str, lines: int = 100) -> str:
        """The last `lines` lines of the workload's output."""

    def adopt(self, node_id: str) -> None:
        """Take over a running workload this adapter instance did not start (agent restart).

        Adapters whose exit watch already covers every labelled workload need nothing here.
        """
        check_id(node_id)  # overrides are checked by __init_subclass__; this default too

    def watch(self, node_ids: Callable[[], builtins.list[str]], on_exit: ExitCallback) -> None:
        """Call `on_exit` when a watched workload ends.

        The default polls `status`; adapters that can be told of exits override this.
        """
        if self._watch_thread is not None:
            return

        def loop() -> None:
            while not self._watch_stop.wait(self.watch_interval):
                for node_id in node_ids():
                    try:
                        st = self.status(node_id)
                    except Exception:  # noqa: BLE001 - a flaky backend must not kill the watch
                        continue
                    if st.state in (WorkloadState.EXITED, WorkloadState.MISSING):
                        on_exit(node_id, st)

        self._watch_thread = threading.Thread(target=loop, name=f"{self.name}-watch", daemon=True)
        self._watch_thread.start()

    def close(self) -> None:
        """Release clients and threads. Running workloads are left alone."""
        self._watch_stop.set()
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=5)
            self._watch_thread = None
