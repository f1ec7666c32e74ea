"""Native processes: one process group per node, a folder per node, pidfd exit watch.

Each node lives in `<root>/<node_id>/` holding `data/` (unless the spec names another data
dir), `node.log` (stdout and stderr), `handle.json` (pid, process start time, endpoint,
labels) and the owner mark of `grid.core.paths`: `stop` deletes only a folder marked as
that node's, and every node path is checked to stay under the root. The start time guards
against pid reuse when a restarted agent adopts nodes.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import select
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from grid.core.errors import SpawnError
from grid.core.naming import node_labels, valid_id
from grid.core.paths import claim_dir, remove_claimed, under
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

READY_FD_ENV = "GRID_READY_FD"
HANDLE_FILE = "handle.json"
LOG_FILE = "node.log"


class ProcessConfig(HostPortConfig):
    root: str = ".grid/nodes"
    host: str = "127.0.0.1"
    start_timeout: float = 15.0
    retain_data: bool = False


def tail_file(path: Path, lines: int) -> str:
    """Last `lines` lines of a text file, reading only its end."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            block = min(size, max(4096, lines * 200))
            fh.seek(size - block)
            data = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:]) if lines > 0 else ""


def read_ready_port(fd: int, proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Wait for a node started with READY_FD_ENV to write its bound port on the ready pipe."""
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], min(0.1, deadline - time.monotonic()))
        if ready:
            chunk = os.read(fd, 64)
            if not chunk:
                break  # writer closed without a port: the process exited or closed the fd
            buf += chunk
            if b"\n" in buf:
                try:
                    return int(buf.split(b"\n", 1)[0])
                except ValueError:
                    raise SpawnError(f"node reported a bad port: {buf!r}") from None
        elif proc.poll() is not None:
            break
    code = proc.poll()
    if code is not None:
        raise SpawnError(f"node exited with code {code} before it listened")
    raise SpawnError(f"node did not report its port within {timeout:.0f}s")


class ProcessPlatform(Platform):
    name = "process"
    config_model = ProcessConfig
    config: ProcessConfig

    def __init__(self, config: PlatformConfig, agent_id: str) -> None:
        super().__init__(config, agent_id)
        self.root = Path(self.config.root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        # exit watch: node_id -> pidfd, plus a pipe that wakes the selector on changes
        self._pidfds: dict[str, int] = {}
        self._wake_r, self._wake_w = os.pipe()
        self._on_exit: ExitCallback | None = None
        self._ports = PortAllocator(self.config.host, self.config.port_range)

    # ---- paths and handle files -----------------------------------------------------

    def node_dir(self, node_id: str) -> Path:
        """`<root>/<node_id>`, refused (UnsafeInputError) if it resolves outside the root."""
        return under(self.root, node_id)

    def _read_handle(self, node_id: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.node_dir(node_id) / HANDLE_FILE).read_text())
            return data
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _process_matches(pid: int, create_time: float) -> psutil.Process | None:
        """The live process `pid` if it is the one started at `create_time` (no pid reuse)."""
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - create_time) > 0.05 or proc.status() == "zombie":
                return None
            return proc
        except psutil.Error:
            return None

    def _handle_from(self, data: dict[str, Any]) -> NodeHandle:
        return NodeHandle(
            node_id=data["node_id"],
            platform=self.name,
            ref=str(data["pid"]),
            endpoint=data["endpoint"],
            port=int(data["port"]),
            started_at=float(data["started_at"]),
            pid=int(data["pid"]),
            meta={"log": data.get("log", ""), "data_dir": data.get("data_dir", "")},
            labels=dict(data.get("labels", {})),
        )

    # ---- lifecycle ---------------------------------------------------------------------

    def spawn(self, spec: NodeSpec) -> NodeHandle:
        node_dir = self.node_dir(spec.node_id)
        claim_dir(node_dir, spec.node_id)
        data_dir = Path(spec.data_dir) if spec.data_dir else node_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = node_dir / LOG_FILE
        env = {**os.environ, **spec.env}
        port = spec.port
        if port == 0 and self.config.port_range is not None:
            try:
                port = self._ports.allocate()
            except OSError as exc:
                raise SpawnError(str(exc)) from None
        ready_r = ready_w = -1
        pass_fds: tuple[int, ...] = ()
        if port == 0:  # the node picks one and reports it on the ready pipe
            ready_r, ready_w = os.pipe()
            env[READY_FD_ENV] = str(ready_w)
            pass_fds = (ready_w,)
        try:
            with log_path.open("ab") as log:
                proc = subprocess.Popen(
                    node_argv(spec.command, spec.node_id, port, str(data_dir), self.config.host),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=node_dir,
                    env=env,
                    start_new_session=True,  # own process group: Ctrl-C on the agent spares it
                    pass_fds=pass_fds,
                )
        except OSError as exc:
            for fd in (ready_r, ready_w):
                if fd >= 0:
                    os.close(fd)
            self._remove_dir(spec.node_id)
            raise SpawnError(f"cannot start {spec.command[0]!r}: {exc.strerror or exc}") from None
        if spec.memory_mb:
            self._limit_memory(proc.pid, spec.memory_mb)
        if ready_w >= 0:
            os.close(ready_w)
            try:
                port = read_ready_port(ready_r, proc, self.config.start_timeout)
            except SpawnError as exc:
                self._kill_group(proc.pid, proc, grace=0)
                detail = tail_file(log_path, 3).replace("\n", " | ")
                self._remove_dir(spec.node_id)
                raise SpawnError(f"{exc}; log: {detail}" if detail else str(exc)) from None
            finally:
                os.close(ready_r)
        started_at = time.time()
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            create_time = 0.0
        data = {
            "node_id": spec.node_id,
            "pid": proc.pid,
            "create_time": create_time,
            "port": port,
            "endpoint": f"http://{self.config.host}:{port}",
            "started_at": started_at,
            "labels": {**node_labels(spec.node_id, spec.agent_id, spec.pool), **spec.labels},
            "log": str(log_path),
            "data_dir": str(data_dir),
        }
        tmp = node_dir / (HANDLE_FILE + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(node_dir / HANDLE_FILE)
        with self._lock:
            self._children[spec.node_id] = proc
        self._watch_pid(spec.node_id, proc.pid)
        return self._handle_from(data)

    @staticmethod
    def _limit_memory(pid: int, memory_mb: int) -> None:
        """Cap the node's address space (RLIMIT_AS): allocations beyond it fail in the node.

        Set from outside with prlimit right after start, so no pre-exec hook runs in a
        threaded agent; the node has not allocated its data yet by then.
        """
        limit = memory_mb * 1024 * 1024
        with contextlib.suppress(psutil.Error, OSError):
            psutil.Process(pid).rlimit(psutil.RLIMIT_AS, (limit, limit))

    def stop(self, node_id: str, grace: float) -> None:
        self._unwatch(node_id)
        with self._lock:
            proc = self._children.pop(node_id, None)
        data = self._read_handle(node_id)
        if proc is not None:
            self._kill_group(proc.pid, proc, grace)
        elif data is not None:
            live = self._process_matches(int(data["pid"]), float(data["create_time"]))
            if live is not None:
                self._kill_group(live.pid, None, grace)
        self._remove_dir(node_id, keep_data=self.config.retain_data)

    def _kill_group(self, pid: int, proc: subprocess.Popen[bytes] | None, grace: float) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    break
            elif _exited(pid):
                break
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        else:
            # not our child: it is dead once it is a zombie; reaping it is its parent's job
            # (init's, for a node of a dead agent), which we need not wait for
            deadline = time.monotonic() + 5
            while not _exited(pid) and time.monotonic() < deadline:
                time.sleep(0.01)

    def _remove_dir(self, node_id: str, keep_data: bool = False) -> None:
        """Remove the node's folder, only if it is marked as this node's (never an unknown one)."""
        node_dir = self.node_dir(node_id)
        if keep_data:
            with contextlib.suppress(FileNotFoundError):
                (node_dir / HANDLE_FILE).unlink()
            return
        remove_claimed(node_dir, node_id)

    def status(self, node_id: str) -> WorkloadStatus:
        with self._lock:
            proc = self._children.get(node_id)
        if proc is not None:
            code = proc.poll()
            if code is None:
                return WorkloadStatus(WorkloadState.RUNNING)
            return WorkloadStatus(WorkloadState.EXITED, exit_code=code, detail=describe_exit(code))
        data = self._read_handle(node_id)
        if data is None:
            return WorkloadStatus(WorkloadState.MISSING, detail="no such node on this agent")
        if self._process_matches(int(data["pid"]), float(data["create_time"])):
            return WorkloadStatus(WorkloadState.RUNNING)
        return WorkloadStatus(WorkloadState.EXITED, detail="process is gone")

    def list(self, labels: dict[str, str]) -> list[NodeHandle]:
        handles: builtins.list[NodeHandle] = []
        if not self.root.is_dir():
            return handles
        for entry in sorted(self.root.iterdir()):
            if not valid_id(entry.name):
                continue  # not a node folder: never read or act on it
            data = self._read_handle(entry.name)
            if data is None or data.get("node_id") != entry.name:
                continue
            node_labels = data.get("labels", {})
            if any(node_labels.get(k) != v for k, v in labels.items()):
                continue
            if self._process_matches(int(data["pid"]), float(data["create_time"])) is None:
                continue
            handles.append(self._handle_from(data))
        return handles

    def adopt(self, node_id: str) -> None:
        """Start watching a node this process did not start (after an agent restart)."""
        data = self._read_handle(node_id)
        if data is not None:
            self._watch_pid(node_id, int(data["pid"]))

    def logs(self, node_id: str, lines: int = 100) -> str:
        return tail_file(self.node_dir(node_id) / LOG_FILE, lines)

    # ---- exit watch: one thread, one pidfd per node -------------------------------------

    def watch(self, node_ids: Callable[[], builtins.list[str]], on_exit: ExitCallback) -> None:
        if self._watch_thread is not None:
            return
        self._on_exit = on_exit
        self._watch_thread = threading.Thread(
            target=self._watch_loop, name="process-watch", daemon=True
        )
        self._watch_thread.start()

    def _watch_pid(self, node_id: str, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        with self._lock:
            old = self._pidfds.pop(node_id, None)
            self._pidfds[node_id] = fd
        if old is not None:
            os.close(old)
        os.write(self._wake_w, b"x")

    def _unwatch(self, node_id: str) -> None:
        with self._lock:
            fd = self._pidfds.pop(node_id, None)
        if fd is not None:
            os.close(fd)
            os.write(self._wake_w, b"x")

    def _watch_loop(self) -> None:
        while not self._watch_stop.is_set():
            sel = selectors.DefaultSelector()
            sel.register(self._wake_r, selectors.EVENT_READ, None)
            with self._lock:
                for node_id, fd in self._pidfds.items():
                    sel.register(fd, selectors.EVENT_READ, node_id)
            try:
                events = sel.select(timeout=1.0)
            except (OSError, ValueError):  # an fd was closed under us: rebuild
                events = []
            finally:
                sel.close()
            for key, _ in events:
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                self._exited(str(key.data), key.fd)

    def _exited(self, node_id: str, fd: int) -> None:
        with self._lock:
            if self._pidfds.get(node_id) != fd:
                return  # stopped on purpose meanwhile
            self._pidfds.pop(node_id)
            proc = self._children.pop(node_id, None)
        os.close(fd)
        if proc is not None:
            code = proc.wait()
            # the group may hold children of the node: end them too
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            st = WorkloadStatus(WorkloadState.EXITED, exit_code=code, detail=describe_exit(code))
        else:
            st = WorkloadStatus(WorkloadState.EXITED, detail="adopted process exited")
        with contextlib.suppress(FileNotFoundError):
            (self.node_dir(node_id) / HANDLE_FILE).unlink()
        if self._on_exit is not None:
            self._on_exit(node_id, st)

    def close(self) -> None:
        super().close()
        with self._lock:
            fds = list(self._pidfds.values())
            self._pidfds.clear()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _exited(pid: int) -> bool:
    """True once `pid` has exited (gone, or a zombie waiting to be reaped)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
