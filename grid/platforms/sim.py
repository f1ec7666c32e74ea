"""Simulated nodes: no process per node, one small HTTP server in this process answers for all.

`SimHost` is the simulated machine every `SimPlatform` of a process shares (like the real
machine the process adapters of several agents would share): a table of workloads and one
selector thread serving HTTP. Each node listens on its own loopback address (127.64.0.0/10,
all on the same port), so the agent's real health probe reaches *that* node: `/health`
answers with the node id, and a stopped or crashed node refuses connections. With
`shared_endpoint` every node's endpoint is the host's own 127.0.0.1 socket instead (no file
descriptor per node, for grids larger than the descriptor limit), and a stopped node's
endpoint keeps answering. `crash()` ends a workload and tells the watching adapter, which
calls the agent's real supervision path (`AgentRuntime._on_exit`).

Starting nodes hold one of `START_SLOTS` until their first `/health` is answered: thousands of
agents share this one process (and its one interpreter lock), and without a bound a burst of
starts starves the serving thread until the agents' probes time out. A thread waiting for a
slot sleeps; the probe's timeout starts after `spawn()` returns, as it does for a process.

The host's own socket also answers `GET /workloads`: what runs on the simulated machine (for
tests that check no node runs twice and none is orphaned).
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import errno
import json
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from grid.core.errors import SpawnError
from grid.core.naming import node_labels
from grid.platforms.base import (
    ExitCallback,
    NodeHandle,
    NodeSpec,
    Platform,
    PlatformConfig,
    WorkloadState,
    WorkloadStatus,
)

HOST_ADDRESS = "127.0.0.1"
_FIRST_NODE_ADDRESS = 127 << 24 | 64 << 16  # 127.64.0.0
_NODE_ADDRESSES = 1 << 22  # 127.64.0.0 - 127.127.255.255
CRASH_EXIT_CODE = -9
LOG_LINES = 20
START_SLOTS = 32


class SimConfig(PlatformConfig):
    shared_endpoint: bool = False  # every node's endpoint is the host's one socket


@dataclass
class SimWorkload:
    node_id: str
    agent_id: str
    labels: dict[str, str]
    endpoint: str
    port: int
    started_at: float
    sock: socket.socket | None = None
    starting: bool = True  # holds a start slot until its first /health answer
    status: WorkloadStatus = field(default_factory=lambda: WorkloadStatus(WorkloadState.RUNNING))
    log: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=LOG_LINES))

    def row(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "agent_id": self.agent_id,
            "endpoint": self.endpoint,
            "state": self.status.state.value,
        }


def _response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class SimHost:
    """The simulated machine: workloads by (agent id, node id) and one HTTP serving thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._workloads: dict[tuple[str, str], SimWorkload] = {}
        self._by_agent: dict[str, set[str]] = collections.defaultdict(set)
        self._watchers: dict[str, ExitCallback] = {}
        self._next_address = 0
        self._slots = threading.Semaphore(START_SLOTS)
        self._shared_starting: collections.deque[SimWorkload] = collections.deque()
        self._selector = selectors.DefaultSelector()
        self._server = socket.create_server((HOST_ADDRESS, 0), backlog=512)
        self._server.setblocking(False)
        self.port: int = self._server.getsockname()[1]
        self.url = f"http://{HOST_ADDRESS}:{self.port}"
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._server, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._pending: list[tuple[str, socket.socket, SimWorkload | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sim-host", daemon=True)
        self._thread.start()

    # ---- workloads --------------------------------------------------------------------

    def start(self, spec: NodeSpec, shared_endpoint: bool) -> SimWorkload:
        if not spec.command:
            raise SpawnError(f"node {spec.node_id}: no command to run")
        key = (spec.agent_id, spec.node_id)
        self.remove(*key)
        self._slots.acquire()
        try:
            sock = None if shared_endpoint else self._listen()
        except SpawnError:
            self._slots.release()
            raise
        host, port = sock.getsockname()[:2] if sock else (HOST_ADDRESS, self.port)
        work = SimWorkload(
            node_id=spec.node_id,
            agent_id=spec.agent_id,
            labels={**node_labels(spec.node_id, spec.agent_id, spec.pool), **spec.labels},
            endpoint=f"http://{host}:{port}",
            port=port,
            started_at=time.time(),
            sock=sock,
        )
        work.log.append(f"simulated node {spec.node_id} listening on {work.endpoint}")
        with self._lock:
            self._workloads[key] = work
            self._by_agent[spec.agent_id].add(spec.node_id)
            if sock is None:  # a probe of the shared socket names no node: oldest first
                self._shared_starting.append(work)
        if sock is not None:
            self._call_in_loop("add", sock, work)
        return work

    def _listen(self) -> socket.socket:
        """A listening socket on the next free loopback address, on the host's port."""
        for _ in range(64):
            with self._lock:
                offset = self._next_address
                self._next_address = (self._next_address + 1) % _NODE_ADDRESSES
            address = socket.inet_ntoa((_FIRST_NODE_ADDRESS + offset).to_bytes(4, "big"))
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, self.port))
                sock.listen(64)
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise SpawnError(f"cannot listen for a simulated node: {exc}") from None
            sock.setblocking(False)
            return sock
        raise SpawnError("no free loopback address for a simulated node")

    def remove(self, agent_id: str, node_id: str) -> SimWorkload | None:
        with self._lock:
            work = self._workloads.pop((agent_id, node_id), None)
            self._by_agent[agent_id].discard(node_id)
        if work is not None:
            self._started(work)
            self._close(work)
        return work

    def _started(self, work: SimWorkload | None) -> None:
        """Give back the start slot of `work`; None: of the oldest node starting on the
        shared endpoint (a probe there cannot say which node it meant)."""
        with self._lock:
            while work is None and self._shared_starting:
                candidate = self._shared_starting.popleft()
                work = candidate if candidate.starting else None
            if work is None or not work.starting:
                return
            work.starting = False
        self._slots.release()

    def crash(self, agent_id: str, node_id: str, detail: str = "killed (simulated)") -> bool:
        """End a running workload as a crash would and tell the adapter watching its agent."""
        with self._lock:
            work = self._workloads.get((agent_id, node_id))
            if work is None or work.status.state != WorkloadState.RUNNING:
                return False
            work.status = WorkloadStatus(WorkloadState.EXITED, CRASH_EXIT_CODE, detail)
            work.log.append(detail)
            on_exit = self._watchers.get(agent_id)
        self._started(work)
        self._close(work)
        if on_exit is not None:
            on_exit(node_id, work.status)
        return True

    def _close(self, work: SimWorkload) -> None:
        sock, work.sock = work.sock, None
        if sock is not None:
            self._call_in_loop("drop", sock, None)

    def get(self, agent_id: str, node_id: str) -> SimWorkload | None:
        with self._lock:
            return self._workloads.get((agent_id, node_id))

    def of_agent(self, agent_id: str) -> list[SimWorkload]:
        with self._lock:
            ids = sorted(self._by_agent.get(agent_id, ()))
            return [self._workloads[(agent_id, n)] for n in ids]

    def workloads(self) -> list[SimWorkload]:
        with self._lock:
            return list(self._workloads.values())

    def watch(self, agent_id: str, on_exit: ExitCallback | None) -> None:
        with self._lock:
            if on_exit is None:
                self._watchers.pop(agent_id, None)
            else:
                self._watchers[agent_id] = on_exit

    def close(self) -> None:
        """End every workload and the serving thread (the process is done simulating)."""
        for work in self.workloads():
            self.remove(work.agent_id, work.node_id)
        self._stop.set()
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        self._server.close()
        self._wake_r.close()
        self._wake_w.close()

    # ---- the serving loop -------------------------------------------------------------

    def _call_in_loop(self, what: str, sock: socket.socket, work: SimWorkload | None) -> None:
        """Selector changes happen on the serving thread; others queue them and wake it."""
        with self._lock:
            self._pending.append((what, sock, work))
        try:
            self._wake_w.send(b"x")
        except OSError:
            if what == "drop":
                sock.close()  # the loop is gone: nothing else will close it

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for what, sock, work in pending:
            if what == "add":
                self._selector.register(sock, selectors.EVENT_READ, work)
            else:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
                sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=1.0):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data == "wake":
                    try:
                        while sock.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                    self._apply_pending()
                elif isinstance(key.data, _Request):
                    self._read(sock, key.data)
                else:
                    self._accept(sock, key.data)
        for key in list(self._selector.get_map().values()):
            if isinstance(key.fileobj, socket.socket) and key.fileobj not in (
                self._server,
                self._wake_r,
            ):
                key.fileobj.close()
        self._selector.close()

    def _accept(self, listener: socket.socket, work: SimWorkload | None) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.setblocking(False)
        self._selector.register(conn, selectors.EVENT_READ, _Request(work))

    def _read(self, conn: socket.socket, request: _Request) -> None:
        try:
            chunk = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        request.data += chunk
        if chunk and b"\r\n\r\n" not in request.data and len(request.data) < 65536:
            return
        self._selector.unregister(conn)
        try:
            if chunk:
                conn.setblocking(True)
                conn.settimeout(1.0)
                conn.sendall(self._answer(request))
        except OSError:
            pass
        finally:
            conn.close()

    def _answer(self, request: _Request) -> bytes:
        line = request.data.split(b"\r\n", 1)[0].split()
        path = line[1].decode(errors="replace") if len(line) > 1 else ""
        work = request.work
        if path == "/health":
            self._started(work)
            node_id = work.node_id if work is not None else ""
            return _response("200 OK", json.dumps({"status": "ok", "node_id": node_id}).encode())
        if path == "/workloads" and work is None:
            rows = [w.row() for w in self.workloads()]
            return _response("200 OK", json.dumps(rows).encode())
        return _response("404 Not Found", b'{"error": "not found"}')


@dataclass
class _Request:
    work: SimWorkload | None
    data: bytes = b""


_host: SimHost | None = None
_host_lock = threading.Lock()


def sim_host() -> SimHost:
    """This process's simulated machine, started on first use."""
    global _host
    with _host_lock:
        if _host is None:
            _host = SimHost()
        return _host


def close_sim_host() -> None:
    global _host
    with _host_lock:
        host, _host = _host, None
    if host is not None:
        host.close()


class SimPlatform(Platform):
    """A platform adapter over the process's `SimHost` (one instance per agent)."""

    name: ClassVar[str] = "sim"
    config_model = SimConfig
    config: SimConfig

    def __init__(self, config: PlatformConfig, agent_id: str) -> None:
        super().__init__(config, agent_id)
        self.host = sim_host()

    def spawn(self, spec: NodeSpec) -> NodeHandle:
        work = self.host.start(spec, self.config.shared_endpoint)
        return self._handle(work)

    def _handle(self, work: SimWorkload) -> NodeHandle:
        return NodeHandle(
            node_id=work.node_id,
            platform=self.name,
            ref=work.endpoint,
            endpoint=work.endpoint,
            port=work.port,
            started_at=work.started_at,
            labels=dict(work.labels),
        )

    def stop(self, node_id: str, grace: float) -> None:
        self.host.remove(self.agent_id, node_id)

    def status(self, node_id: str) -> WorkloadStatus:
        work = self.host.get(self.agent_id, node_id)
        return work.status if work is not None else WorkloadStatus(WorkloadState.MISSING)

    def list(self, labels: dict[str, str]) -> builtins.list[NodeHandle]:
        return [
            self._handle(w)
            for w in self.host.of_agent(self.agent_id)
            if w.status.state == WorkloadState.RUNNING
            and all(w.labels.get(k) == v for k, v in labels.items())
        ]

    def logs(self, node_id: str, lines: int = 100) -> str:
        work = self.host.get(self.agent_id, node_id)
        return "\n".join(list(work.log)[-lines:]) if work is not None and lines > 0 else ""

    def watch(self, node_ids: Callable[[], builtins.list[str]], on_exit: ExitCallback) -> None:
        """Exits are told by the host (`SimHost.crash`): no polling thread per agent."""
        self.host.watch(self.agent_id, on_exit)

    def close(self) -> None:
        self.host.watch(self.agent_id, None)
