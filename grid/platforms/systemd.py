"""systemd: one service unit file per node, driven through `systemctl`.

Each node gets a unit file `<unit_dir>/<prefix><node_id>.service` (see `render_unit`) and a
folder `<data_root>/<node_id>/` (its working directory, holding `data/` unless the spec names
another data dir). The unit carries the node's identity, endpoint and labels as `X-Grid-*`
keys, which systemd ignores and `list` reads back, so a restarted agent adopts its nodes from
the unit files alone; `systemctl show` says which of them are alive.

Every `systemctl`/`journalctl` call goes through one command boundary (`Runner`), whose argv
prefixes come from the config: `["systemctl"]` on the host, `["podman", "exec", CTR,
"systemctl"]` or `["nsenter", "-t", PID, "-a", "systemctl"]` to drive a systemd inside a
container (the e2e tests do one or the other). Unit files and
node folders are written locally: when systemd runs elsewhere, those paths must be shared.
Pids are as systemd sees them (inside the container's pid namespace in that case).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from grid.core.errors import PlatformError, PlatformUnavailableError, SpawnError
from grid.core.naming import node_labels, valid_id
from grid.core.paths import claim_dir, remove_claimed, under
from grid.core.ports import PortAllocator
from grid.platforms.base import (
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

SYSTEM_UNIT_DIR = "/etc/systemd/system"
USER_UNIT_DIR = "~/.config/systemd/user"
SYSTEM_DATA_ROOT = "/var/lib/grid/nodes"
USER_DATA_ROOT = "~/.local/share/grid/nodes"

# ActiveState values during which the node's process exists (or is about to, on restart).
_ALIVE_STATES = ("active", "activating", "reloading", "deactivating")
_STATUS_PROPS = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "MainPID",
    "ExecMainCode",
    "ExecMainStatus",
    "ExecMainStartTimestamp",
    "NRestarts",
)
# systemctl's answers when there is no systemd to talk to (not booted, no bus, no container).
_UNAVAILABLE_HINTS = (
    "has not been booted with systemd",
    "failed to connect to bus",
    "no container with name or id",
    "container state improper",
)
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXEC_PREFIX_CHARS = "@-:+!"  # systemd reads these at the start of ExecStart as flags
_META_PREFIX = "X-Grid-"

log = logging.getLogger(__name__)


class SystemdConfig(HostPortConfig):
    scope: Literal["system", "user"] = "system"
    unit_dir: str | None = None  # default per scope: /etc/systemd/system, ~/.config/systemd/user
    data_root: str | None = None  # default per scope: /var/lib/grid/nodes, ~/.local/share/...
    host: str = "127.0.0.1"
    unit_prefix: str = "grid-node-"
    systemctl: tuple[str, ...] = ("systemctl",)
    journalctl: tuple[str, ...] = ("journalctl",)
    start_timeout: float = 15.0
    stop_timeout: float = 10.0  # TimeoutStopSec written at spawn; stop() sets its own grace
    restart_sec: float = 1.0
    command_timeout: float = 30.0
    retain_data: bool = False


# ---- the command boundary --------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], float], CommandResult]


def run_command(argv: Sequence[str], timeout: float) -> CommandResult:
    """Run one command to completion; the only place this adapter starts a process."""
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise PlatformUnavailableError(f"command not found: {argv[0]!r}") from None
    except subprocess.TimeoutExpired:
        raise PlatformUnavailableError(
            f"{' '.join(argv)!r} did not finish within {timeout:g}s"
        ) from None
    return CommandResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


# ---- unit files (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class UnitParams:
    """What `render_unit` needs besides the spec, all as seen by the systemd that runs it."""

    port: int
    working_dir: str
    data_dir: str
    endpoint: str
    restart_sec: float = 1.0
    stop_timeout: float = 10.0
    wanted_by: str = "multi-user.target"


@dataclass(frozen=True)
class UnitMeta:
    """The `X-Grid-*` keys of a unit file."""

    node_id: str
    agent_id: str
    pool: str
    port: int
    endpoint: str
    data_dir: str
    labels: dict[str, str]


def unit_name(prefix: str, node_id: str) -> str:
    return f"{prefix}{node_id}.service"


def _quote(value: str, *, exec_line: bool) -> str:
    """A double-quoted systemd word: C escapes, `%%` for specifiers, `$$` in Exec lines."""
    if "\0" in value:
        raise SpawnError(f"a NUL byte cannot be passed through a unit file: {value!r}")
    out = []
    for ch in value:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        elif ch == "%":
            out.append("%%")
        elif ch == "$" and exec_line:
            out.append("$$")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _plain(value: str) -> str:
    """A whole-line value (Description, paths): no newlines, specifiers escaped."""
    if any(ord(ch) < 0x20 for ch in value):
        raise SpawnError(f"control characters cannot go in a unit file value: {value!r}")
    return value.replace("%", "%%").rstrip("\\")


def _seconds(value: float) -> str:
    """A systemd time span; never 0, which would mean 'no timeout' to systemd."""
    ms = max(1, round(value * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _cpu_quota(cpus: float) -> str:
    return f"{round(cpus * 100, 2):g}%"


def render_unit(spec: NodeSpec, params: UnitParams) -> str:
    """The unit file text of one node. Pure: raises SpawnError for specs a unit cannot hold."""
    if not spec.command:
        raise SpawnError("the node command is empty")
    if spec.command[0][:1] in _EXEC_PREFIX_CHARS:
        raise SpawnError(f"the node command may not start with any of {_EXEC_PREFIX_CHARS!r}")
    if params.port <= 0:
        raise SpawnError("a unit needs a fixed port")
    bad_keys = [k for k in spec.env if not _ENV_KEY_RE.match(k)]
    if bad_keys:
        raise SpawnError(f"invalid environment variable names: {', '.join(map(repr, bad_keys))}")
    argv = node_argv(spec.command, spec.node_id, params.port, params.data_dir)
    labels = {**spec.labels, **node_labels(spec.node_id, spec.agent_id, spec.pool)}
    meta = {
        "NodeId": spec.node_id,
        "AgentId": spec.agent_id,
        "Pool": spec.pool,
        "Port": str(params.port),
        "Endpoint": params.endpoint,
        "DataDir": params.data_dir,
        "Labels": json.dumps(labels, sort_keys=True),
    }
    lines = [
        "[Unit]",
        f"Description={_plain(f'Grid node {spec.node_id} (pool {spec.pool})')}",
        *(f"{_META_PREFIX}{key}={_plain(value)}" for key, value in meta.items()),
        "",
        "[Service]",
        "Type=exec",
        "ExecStart=" + " ".join(_quote(arg, exec_line=True) for arg in argv),
        f"WorkingDirectory={_plain(params.working_dir)}",
    ]
    if spec.env:
        env = (_quote(f"{k}={v}", exec_line=False) for k, v in sorted(spec.env.items()))
        lines.append("Environment=" + " ".join(env))
    if spec.memory_mb is not None:
        lines.append(f"MemoryMax={spec.memory_mb}M")
    if spec.cpus is not None:
        lines.append(f"CPUQuota={_cpu_quota(spec.cpus)}")
    lines += [
        "Restart=on-failure",
        f"RestartSec={_seconds(params.restart_sec)}",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={_seconds(params.stop_timeout)}",
        "",
        "[Install]",
        f"WantedBy={params.wanted_by}",
        "",
    ]
    return "\n".join(lines)


def read_unit_meta(text: str) -> UnitMeta | None:
    """The `X-Grid-*` keys of a unit written by `render_unit`; None if any is missing."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith(_META_PREFIX) and "=" in line:
            key, value = line[len(_META_PREFIX) :].split("=", 1)
            values[key] = value.replace("%%", "%")
    try:
        labels = json.loads(values["Labels"])
        return UnitMeta(
            node_id=values["NodeId"],
            agent_id=values["AgentId"],
            pool=values["Pool"],
            port=int(values["Port"]),
            endpoint=values["Endpoint"],
            data_dir=values["DataDir"],
            labels={str(k): str(v) for k, v in labels.items()},
        )
    except (KeyError, ValueError, AttributeError):
        return None


def _set_stop_timeout(text: str, grace: float) -> str:
    return re.sub(r"(?m)^TimeoutStopSec=.*$", f"TimeoutStopSec={_seconds(grace)}", text)


def parse_show(output: str) -> list[dict[str, str]]:
    """`systemctl show` output, one dict per unit (units are separated by blank lines)."""
    blocks: list[dict[str, str]] = [{}]
    for line in output.splitlines():
        if not line.strip():
            if blocks[-1]:
                blocks.append({})
            continue
        key, _, value = line.partition("=")
        blocks[-1][key] = value
    return [b for b in blocks if b]


def status_from_show(props: dict[str, str]) -> WorkloadStatus:
    """Map one unit's `systemctl show` properties to a WorkloadStatus."""
    load, active, sub = (props.get(k, "") for k in ("LoadState", "ActiveState", "SubState"))
    detail = f"{active}/{sub}" if sub else active
    if load == "not-found" and active == "inactive":
        return WorkloadStatus(WorkloadState.MISSING, detail="no such unit")
    if active == "activating" or sub == "auto-restart":
        return WorkloadStatus(WorkloadState.STARTING, detail=detail)
    if active in _ALIVE_STATES:
        return WorkloadStatus(WorkloadState.RUNNING, detail=detail)
    code = _exit_code(props)
    result = props.get("Result", "")
    what = describe_exit(code) if code is not None else "exited"
    return WorkloadStatus(
        WorkloadState.EXITED, exit_code=code, detail=f"{detail}: {what} ({result})"
    )


def _exit_code(props: dict[str, str]) -> int | None:
    """ExecMainCode is a CLD_* code: 1 exited (status = code), 2/3 killed (status = signal)."""
    try:
        how, status = int(props.get("ExecMainCode", "0")), int(props.get("ExecMainStatus", "0"))
    except ValueError:
        return None
    if how == 1:
        return status
    if how in (2, 3):
        return -status
    return None


def _started_at(props: dict[str, str]) -> float:
    stamp = props.get("ExecMainStartTimestamp", "")
    try:
        return float(stamp.lstrip("@"))
    except ValueError:
        return time.time()


# ---- the adapter -----------------------------------------------------------------------


class SystemdPlatform(Platform):
    name = "systemd"
    config_model = SystemdConfig
    config: SystemdConfig

    def __init__(self, config: PlatformConfig, agent_id: str, runner: Runner = run_command) -> None:
        super().__init__(config, agent_id)
        user = self.config.scope == "user"
        unit_dir = self.config.unit_dir or (USER_UNIT_DIR if user else SYSTEM_UNIT_DIR)
        data_root = self.config.data_root or (USER_DATA_ROOT if user else SYSTEM_DATA_ROOT)
        self.unit_dir = Path(unit_dir).expanduser().resolve()
        self.data_root = Path(data_root).expanduser().resolve()
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        self._runner = runner
        self._ports = PortAllocator(self.config.host, self.config.port_range)
        self._scope_flag = ["--user"] if user else []
        self._wanted_by = "default.target" if user else "multi-user.target"

    # ---- commands ------------------------------------------------------------------

    def _run(
        self, argv: list[str], ok: Sequence[int] = (0,), timeout: float | None = None
    ) -> CommandResult:
        result = self._runner(argv, timeout or self.config.command_timeout)
        log.debug("%s -> %d", " ".join(argv), result.returncode)
        if result.returncode in ok:
            return result
        message = (result.stderr or result.stdout).strip().replace("\n", " | ")
        text = f"{' '.join(argv)!r} failed with code {result.returncode}: {message}"
        if any(hint in message.lower() for hint in _UNAVAILABLE_HINTS):
            raise PlatformUnavailableError(text)
        raise PlatformError(text)

    def systemctl(
        self, *args: str, ok: Sequence[int] = (0,), timeout: float | None = None
    ) -> CommandResult:
        return self._run([*self.config.systemctl, *self._scope_flag, *args], ok, timeout)

    def _show(self, *units: str) -> list[dict[str, str]]:
        props = ",".join(_STATUS_PROPS)
        out = self.systemctl("show", "--timestamp=unix", "-p", props, "--", *units).stdout
        return parse_show(out)

    # ---- paths -------------------------------------------------------------------------

    def unit(self, node_id: str) -> str:
        return unit_name(self.config.unit_prefix, node_id)

    def unit_path(self, node_id: str) -> Path:
        """The node's unit file, refused (UnsafeInputError) if it resolves outside unit_dir."""
        return under(self.unit_dir, self.unit(node_id))

    def node_dir(self, node_id: str) -> Path:
        """The node's folder, refused (UnsafeInputError) if it resolves outside data_root."""
        return under(self.data_root, node_id)

    def _read_meta(self, path: Path) -> UnitMeta | None:
        try:
            return read_unit_meta(path.read_text())
        except (FileNotFoundError, UnicodeDecodeError):
            return None

    def _handle(self, meta: UnitMeta, props: dict[str, str]) -> NodeHandle:
        pid = int(props.get("MainPID", "0") or 0)
        return NodeHandle(
            node_id=meta.node_id,
            platform=self.name,
            ref=self.unit(meta.node_id),
            endpoint=meta.endpoint,
            port=meta.port,
            started_at=_started_at(props),
            pid=pid or None,
            labels=dict(meta.labels),
            meta={
                "unit": self.unit(meta.node_id),
                "unit_file": str(self.unit_path(meta.node_id)),
                "data_dir": meta.data_dir,
            },
        )

    # ---- lifecycle ---------------------------------------------------------------------

    def spawn(self, spec: NodeSpec) -> NodeHandle:
        existing = self._live_handle(spec.node_id)
        if existing is not None:  # a redelivered spawn task: the node already runs
            return existing
        node_dir = self.node_dir(spec.node_id)
        data_dir = spec.data_dir or str(node_dir / "data")
        try:
            port = spec.port or self._ports.allocate()
        except OSError as exc:
            raise SpawnError(str(exc)) from None
        params = UnitParams(
            port=port,
            working_dir=str(node_dir),
            data_dir=data_dir,
            endpoint=f"http://{self.config.host}:{port}",
            restart_sec=self.config.restart_sec,
            stop_timeout=self.config.stop_timeout,
            wanted_by=self._wanted_by,
        )
        text = render_unit(spec, params)
        claim_dir(node_dir, spec.node_id)
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        path = self.unit_path(spec.node_id)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        try:
            self.systemctl("daemon-reload")
            started = self.systemctl("start", "--", self.unit(spec.node_id), ok=range(256))
            props = self._wait_started(spec.node_id, started)
        except PlatformError:
            with contextlib.suppress(PlatformError):  # keep the first error
                self._remove(spec.node_id, grace=1.0, keep_data=False)
            raise
        meta = read_unit_meta(text)
        assert meta is not None  # render_unit wrote every key
        return self._handle(meta, props)

    def _wait_started(self, node_id: str, started: CommandResult) -> dict[str, str]:
        """Properties of the unit once active; SpawnError with its journal if it failed."""
        deadline = time.monotonic() + self.config.start_timeout
        while True:
            props = self._show(self.unit(node_id))[0]
            st = status_from_show(props)
            if props.get("ActiveState") == "active" and props.get("SubState") == "running":
                return props
            failed = started.returncode != 0 or st.state in (
                WorkloadState.EXITED,
                WorkloadState.MISSING,
            )
            if failed or props.get("SubState") == "auto-restart":
                why = started.stderr.strip().split("\n")[0] or st.detail
                raise SpawnError(self._failure(node_id, why))
            if time.monotonic() >= deadline:
                raise SpawnError(
                    self._failure(
                        node_id, f"still {st.detail} after {self.config.start_timeout:g}s"
                    )
                )
            time.sleep(0.05)

    def _failure(self, node_id: str, why: str) -> str:
        tail = ""
        with contextlib.suppress(PlatformError):
            tail = self.logs(node_id, lines=5).strip().replace("\n", " | ")
        message = f"unit {self.unit(node_id)} did not start: {why}"
        return f"{message}; journal: {tail}" if tail else message

    def stop(self, node_id: str, grace: float) -> None:
        self._remove(node_id, grace, keep_data=self.config.retain_data)

    def _remove(self, node_id: str, grace: float, keep_data: bool) -> None:
        """Stop the unit (TimeoutStopSec = grace, then SIGKILL), delete its file, forget it.

        Only a unit file written for this node (its `X-Grid-NodeId`) and a folder marked as
        this node's are deleted: stopping an unknown node deletes nothing.
        """
        path = self.unit_path(node_id)
        unit = self.unit(node_id)
        meta = self._read_meta(path)
        ours = meta is not None and meta.node_id == node_id
        with contextlib.suppress(FileNotFoundError):
            text = path.read_text() if ours else ""
            wanted = _set_stop_timeout(text, grace)
            if wanted != text:
                path.write_text(wanted)
                self.systemctl("daemon-reload")
        # 5: unit not loaded, which is fine for an idempotent stop
        self.systemctl("stop", "--", unit, ok=(0, 5), timeout=grace + self.config.command_timeout)
        if ours:
            path.unlink(missing_ok=True)
            self.systemctl("daemon-reload")
        self.systemctl("reset-failed", "--", unit, ok=range(256))
        if not keep_data:
            remove_claimed(self.node_dir(node_id), node_id)

    def status(self, node_id: str) -> WorkloadStatus:
        return status_from_show(self._show(self.unit(node_id))[0])

    def _live_handle(self, node_id: str) -> NodeHandle | None:
        meta = self._read_meta(self.unit_path(node_id))
        found = self._live_handles([meta]) if meta is not None else []
        return found[0] if found else None

    def _live_handles(self, metas: list[UnitMeta]) -> list[NodeHandle]:
        """Handles of the units among `metas` whose process exists (one systemctl call)."""
        if not metas:
            return []
        shown = self._show(*(self.unit(m.node_id) for m in metas))
        by_unit = {props.get("Id", ""): props for props in shown}
        handles = []
        for meta in metas:
            props = by_unit.get(self.unit(meta.node_id), {})
            if props.get("ActiveState") in _ALIVE_STATES:
                handles.append(self._handle(meta, props))
        return handles

    def list(self, labels: dict[str, str]) -> list[NodeHandle]:
        metas = []
        for path in sorted(self.unit_dir.glob(f"{self.config.unit_prefix}*.service")):
            meta = self._read_meta(path)
            if meta is None or not valid_id(meta.node_id) or path.name != self.unit(meta.node_id):
                continue  # not a unit this adapter wrote: never adopt or act on it
            if all(meta.labels.get(k) == v for k, v in labels.items()):
                metas.append(meta)
        return self._live_handles(metas)

    def logs(self, node_id: str, lines: int = 100) -> str:
        if lines <= 0:
            return ""
        unit_flag = "--user-unit" if self._scope_flag else "--unit"
        argv = [*self.config.journalctl, f"{unit_flag}={self.unit(node_id)}", "-n", str(lines)]
        return self._run([*argv, "--no-pager", "-o", "cat"]).stdout.rstrip("\n")
