"""grid-node: the storage node Grid runs by default, a small key-value server over HTTP.

Stdlib only, and nothing heavy imported on the start path: agents spawn many of these and
wait for /health, so start-up time is part of every scale-up. That is also why /metrics is
written here by hand and not with prometheus_client (its import cost is in grid.node.prom).

    PUT/GET/DELETE /kv/{key}    raw bytes, one file per key under <data-dir>/kv/
    GET /health                 JSON status with key and byte counts
    GET /metrics                Prometheus text format 0.0.4
    PUT/DELETE /gauges/{name}   custom gauges (a float body), exposed in /metrics; at most
                                MAX_GAUGES of them (409 for one more)

With `--port 0` the kernel picks the port; it is reported on the pipe named by
GRID_READY_FD (if set) and always in <data-dir>/node.json, both once the socket listens.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from types import FrameType
from typing import Any
from urllib.parse import unquote_to_bytes

from grid.node.httpguard import GuardedHandler, GuardedServer
from grid.node.prom import escape_label_value, format_sample, format_value, is_metric_name

# Must match grid.platforms.process.READY_FD_ENV (not imported: it pulls in psutil).
READY_FD_ENV = "GRID_READY_FD"
NODE_FILE = "node.json"
DESCRIPTION = "grid-node: a small key-value storage server over HTTP"
MAX_KEY_BYTES = 200
MAX_VALUE_BYTES = 16 * 1024 * 1024
MAX_GAUGE_BODY = 64
MAX_GAUGES = 100  # custom gauges per node: each becomes series (and Redis keys) downstream
RESERVED_GAUGE_PREFIXES = ("grid_node_", "process_")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds granted to in-flight requests on SIGTERM/SIGINT (an idle node exits at once);
# under the agents' default 5 s SIGTERM-to-SIGKILL grace (settings.stop_grace).
DRAIN_TIMEOUT = 4.0
IDLE_TIMEOUT = 60.0  # seconds before an idle keep-alive connection is dropped
MAX_CONNECTIONS = 128  # open connections served at once; more get 503 and are closed
HEAD_TIMEOUT = 10.0  # seconds for a request line and headers, from their first byte
SERVE_POLL = 1.0  # stop requests interrupt select() at once; this is only a backstop


# a single-sample metric family: (name, type, help, value)
Family = tuple[str, str, str, float]


class StoreError(Exception):
    """The data directory could not be read or written."""


def write_atomic(path: str, data: bytes, sync: bool = False) -> None:
    """Write `data` to `path` through a temporary file and a rename.

    With `sync`, the file is fsynced before the rename and its directory after it: only
    then does the new name survive a crash (the rename is an entry of the directory).
    """
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if sync:
        sync_dir(os.path.dirname(path))


def sync_dir(path: str) -> None:
    """fsync a directory, so that the renames and unlinks done in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class Store:
    """Values on disk, one file per key, with an in-memory index of keys and sizes.

    A file is named by the SHA-256 of its key (any key fits any filesystem) and holds
    MAGIC, the key length (2 bytes), the key, then the value. Writes are fsynced and
    renamed into place, so a crash leaves the old or the new value, never a torn one; the
    directory is fsynced after each rename and unlink, before the request is answered.
    """

    MAGIC = b"GKV1"

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.dir = os.path.join(data_dir, "kv")
        os.makedirs(self.dir, exist_ok=True)
        self._lock = threading.Lock()
        self._sizes: dict[bytes, int] = {}
        self._bytes = 0
        self._load()

    def _path(self, key: bytes) -> str:
        return os.path.join(self.dir, hashlib.sha256(key).hexdigest())

    def _header(self, key: bytes) -> bytes:
        return self.MAGIC + len(key).to_bytes(2, "big") + key

    def _read_key(self, fh: Any) -> bytes | None:
        """The key stored in an open value file (positioned after it), or None if corrupt."""
        head = fh.read(len(self.MAGIC) + 2)
        if len(head) != len(self.MAGIC) + 2 or not head.startswith(self.MAGIC):
            return None
        length = int.from_bytes(head[len(self.MAGIC) :], "big")
        key: bytes = fh.read(length)
        return key if len(key) == length else None

    def _load(self) -> None:
        """Rebuild the index from the files; drop leftovers of interrupted writes."""
        for entry in os.scandir(self.dir):
            if ".tmp-" in entry.name:
                _unlink_quietly(entry.path)
                continue
            if not entry.is_file():
                continue
            with open(entry.path, "rb") as fh:
                key = self._read_key(fh)
                size = os.fstat(fh.fileno()).st_size - fh.tell()
            if key is None or self._path(key) != entry.path:
                print(f"grid-node: ignoring unreadable file {entry.path}", file=sys.stderr)
                continue
            self._sizes[key] = size
            self._bytes += size

    def counts(self) -> tuple[int, int]:
        """(number of keys, total value bytes)."""
        with self._lock:
            return len(self._sizes), self._bytes

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            if key not in self._sizes:
                return None
        try:
            with open(self._path(key), "rb") as fh:
                if self._read_key(fh) != key:
                    raise StoreError("corrupt value file")
                value: bytes = fh.read()
                return value
        except FileNotFoundError:
            return None  # deleted since the index was read
        except OSError as exc:
            raise StoreError(str(exc)) from exc

    def put(self, key: bytes, value: bytes) -> bool:
        """Store the value; True if the key is new."""
        path = self._path(key)
        try:
            write_atomic(path, self._header(key) + value, sync=True)
        except OSError as exc:
            raise StoreError(str(exc)) from exc
        with self._lock:
            old = self._sizes.get(key)
            self._sizes[key] = len(value)
            self._bytes += len(value) - (old or 0)
        return old is None

    def delete(self, key: bytes) -> bool:
        """Remove the key, durably (the directory is fsynced); False if it was missing."""
        with self._lock:
            size = self._sizes.get(key)
            if size is None:
                return False
            try:
                _unlink_quietly(self._path(key))
            except OSError as exc:
                raise StoreError(str(exc)) from exc
            del self._sizes[key]
            self._bytes -= size
        try:
            sync_dir(self.dir)
        except OSError as exc:
            raise StoreError(str(exc)) from exc
        return True


class Metrics:
    """Request counters, the latency histogram, in-flight count and custom gauges."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.requests: dict[tuple[str, str], int] = {}
        self.inflight = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # last one is +Inf
        self.latency_sum = 0.0
        self.gauges: dict[str, float] = {}

    def begin(self) -> None:
        with self._cond:
            self.inflight += 1

    def end(self, method: str, code: int, seconds: float) -> None:
        """Close a request started by `begin`; code 0 means no response was sent."""
        with self._cond:
            self.inflight -= 1
            if code:
                label = (method, str(code))
                self.requests[label] = self.requests.get(label, 0) + 1
                self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
                self.latency_sum += seconds
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.inflight == 0, timeout)

    def set_gauge(self, name: str, value: float) -> bool:
        """Set a gauge; False (and nothing set) if it is new and MAX_GAUGES exist."""
        with self._cond:
            if name not in self.gauges and len(self.gauges) >= MAX_GAUGES:
                return False
            self.gauges[name] = value
            return True

    def delete_gauge(self, name: str) -> bool:
        with self._cond:
            return self.gauges.pop(name, None) is not None

    def render(self, families: list[Family]) -> str:
        """Exposition text: request metrics, then `families` (name, type, help, value)."""
        with self._cond:
            requests = sorted(self.requests.items())
            inflight, buckets, total = self.inflight, list(self.buckets), self.latency_sum
            gauges = sorted(self.gauges.items())
        lines = _family("grid_node_requests_total", "counter", "HTTP requests by method and code")
        lines += [
            format_sample("grid_node_requests_total", n, {"method": m, "code": c})
            for (m, c), n in requests
        ]
        lines += _family("grid_node_inflight_requests", "gauge", "requests being served")
        lines.append(format_sample("grid_node_inflight_requests", inflight))
        lines += _histogram("grid_node_request_latency_seconds", buckets, total)
        for name, kind, text, value in families:
            lines += _family(name, kind, text)
            lines.append(format_sample(name, value))
        for name, value in gauges:
            lines += _family(name, "gauge", "custom gauge set through PUT /gauges/")
            lines.append(format_sample(name, value))
        return "\n".join(lines) + "\n"


def _family(name: str, kind: str, text: str) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def _histogram(name: str, buckets: list[int], total: float) -> list[str]:
    lines = _family(name, "histogram", "time to serve a request, response included")
    cumulative = 0
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
        cumulative += count
        le = escape_label_value(format_value(bound))
        lines.append(f'{name}_bucket{{le="{le}"}} {cumulative}')
    lines.append(f"{name}_sum {format_value(total)}")
    lines.append(f"{name}_count {cumulative}")
    return lines


def process_families(started_wall: float) -> list[Family]:
    """The standard process_* metrics, read from os.times() and /proc (Linux)."""
    times = os.times()
    cpu = times.user + times.system
    families: list[Family] = [
        ("process_cpu_seconds_total", "counter", "user and system CPU time", cpu),
        ("process_start_time_seconds", "gauge", "start time since the epoch", started_wall),
    ]
    try:
        with open("/proc/self/statm", "rb") as fh:
            rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        fds = len(os.listdir("/proc/self/fd"))
        families.append(("process_resident_memory_bytes", "gauge", "resident memory", rss))
        families.append(("process_open_fds", "gauge", "open file descriptors", fds))
    except (OSError, ValueError, IndexError):
        pass
    return families


class NodeServer(GuardedServer):
    """The HTTP server plus everything the handlers share."""

    def __init__(
        self,
        host: str,
        port: int,
        node_id: str,
        store: Store,
        access_log: bool,
        max_connections: int = MAX_CONNECTIONS,
        head_timeout: float = HEAD_TIMEOUT,
    ) -> None:
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.node_id = node_id
        self.store = store
        self.metrics = Metrics()
        self.access_log = access_log
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.stopping = False
        super().__init__((host, port), NodeHandler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host (slow, and unused)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def service_actions(self) -> None:
        # Backstop: a stop signal landing inside socketserver's bare `except:` is swallowed.
        if self.stopping:
            raise _Stop

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line on stderr instead of a traceback; quiet when the client went away."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError | _Stop):
            print(f"grid-node: error serving {client_address}: {exc!r}", file=sys.stderr)

    def health(self) -> dict[str, Any]:
        keys, size = self.store.counts()
        return {
            "status": "ok",
            "node_id": self.node_id,
            "uptime": round(time.monotonic() - self.started, 3),
            "keys": keys,
            "bytes": size,
            "port": self.server_port,
            "pid": os.getpid(),
        }

    def render_metrics(self) -> str:
        keys, size = self.store.counts()
        uptime = time.monotonic() - self.started
        families: list[Family] = [
            ("grid_node_keys", "gauge", "keys stored", keys),
            ("grid_node_bytes", "gauge", "value bytes stored", size),
            ("grid_node_uptime_seconds", "gauge", "seconds since start", uptime),
        ]
        return self.metrics.render(families + process_families(self.started_wall))


Route = Callable[["NodeHandler", str], None]


class NodeHandler(GuardedHandler):
    server: NodeServer
    protocol_version = "HTTP/1.1"
    server_version = "grid-node"
    timeout = IDLE_TIMEOUT
    _code = 0
    _length: int | None = None  # the request's Content-Length, once checked
    _unread = 0  # body bytes not read yet: the connection cannot be reused while any remain
    _expects_continue = False  # the client waits for "100 Continue" before its body

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    # ---- plumbing ------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Route one request, timing it and counting it in the metrics."""
        metrics = self.server.metrics
        metrics.begin()
        start = time.perf_counter()
        self._code = 0
        try:
            if self._framing_ok():
                self._route()
        except StoreError as exc:
            self._error(500, f"storage error: {exc}")
        except Exception:
            if not self._code:  # a bug: answer, then let handle_error log it
                self._error(500, "internal error", connection="close")
            raise
        finally:
            metrics.end(self.command, self._code, time.perf_counter() - start)
        if self.server.stopping or self._unread:
            self.close_connection = True  # an unread body would be parsed as a request

    def _framing_ok(self) -> bool:
        """Check how the body is delimited, before anything else; else 400/411, closed.

        Only Content-Length bodies are served: with Transfer-Encoding as well the two could
        disagree on where the body ends (request smuggling), and a chunked body alone is
        refused rather than read as the next request.
        """
        self._length, self._unread = None, 0
        lengths = self.headers.get_all("Content-Length") or []
        if "Transfer-Encoding" in self.headers:
            if lengths:
                self._error(400, "Transfer-Encoding with Content-Length", connection="close")
            else:
                self._error(
                    411, "chunked bodies are not served: send Content-Length", connection="close"
                )
            return False
        if len(lengths) > 1:
            self._error(400, "more than one Content-Length", connection="close")
            return False
        if lengths:
            raw = lengths[0].strip()
            if not (raw.isascii() and raw.isdigit()):  # "²".isdigit() is True
                self._error(400, "invalid Content-Length", connection="close")
                return False
            self._length = self._unread = int(raw)
        return True

    def _route(self) -> None:
        path = self.path.split("?", 1)[0]
        head, sep, arg = path[1:].partition("/")
        methods = ROUTES.get((head, bool(sep)))
        if methods is None:
            self._error(404, f"no such path {path}")
            return
        route = methods.get(self.command)
        if route is None:
            self._error(405, f"{self.command} not allowed on {path}", allow=", ".join(methods))
            return
        route(self, arg)

    def version_string(self) -> str:
        return self.server_version

    def send_response(self, code: int, message: str | None = None) -> None:
        self._code = code
        super().send_response(code, message)

    def _send(self, code: int, body: bytes = b"", ctype: str = "", **headers: str) -> None:
        self.send_response(code)
        if code != 204:
            self.send_header("Content-Type", ctype or "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-").title(), value)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj: Any, **headers: str) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json", **headers)

    def _error(self, code: int, message: str, **headers: str) -> None:
        self._json(code, {"error": message}, **headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors raised by the HTTP machinery itself (bad request line, ...), as JSON."""
        self._error(code, message or self.responses.get(code, ("error",))[0], connection="close")

    def handle_expect_100(self) -> bool:
        """Answer "100 Continue" only once the route is about to read the body (`_read_body`):
        a request refused first (404, 405, 413, ...) gets its final answer, and the client
        never sends the body (curl asks this for large PUTs)."""
        self._expects_continue = True
        return True

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.access_log:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def _read_body(self, limit: int) -> bytes | None:
        """The request body, or None after answering 411/413 (or if the client left).

        Content-Length was checked by `_framing_ok`; a refused body is never read, and
        `_dispatch` closes the connection instead.
        """
        length = self._length
        if length is None:
            self._error(411, "Content-Length required", connection="close")
            return None
        if length > limit:
            self._error(413, f"body over {limit} bytes", connection="close")
            return None
        if self._expects_continue:
            self._expects_continue = False
            self.send_response_only(100)
            self.end_headers()
        body = self.rfile.read(length)
        self._unread = length - len(body)
        return body if not self._unread else None

    # ---- routes --------------------------------------------------------------------------

    def _health(self, _: str) -> None:
        self._json(200, self.server.health())

    def _metrics(self, _: str) -> None:
        body = self.server.render_metrics().encode()
        self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")

    def _key(self, raw: str) -> bytes | None:
        """The percent-decoded key of a /kv/ path, or None after answering 400."""
        key = unquote_to_bytes(raw)
        if not key or "/" in raw:
            self._error(400, "key must be one non-empty path segment")
        elif len(key) > MAX_KEY_BYTES:
            self._error(400, f"key over {MAX_KEY_BYTES} bytes")
        else:
            return key
        return None

    def _kv_get(self, raw: str) -> None:
        key = self._key(raw)
        if key is None:
            return
        value = self.server.store.get(key)
        if value is None:
            self._error(404, "no such key")
        else:
            self._send(200, value, "application/octet-stream")

    def _kv_put(self, raw: str) -> None:
        key = self._key(raw)
        if key is None:
            return
        value = self._read_body(MAX_VALUE_BYTES)
        if value is not None:
            self._send(201 if self.server.store.put(key, value) else 204)

    def _kv_delete(self, raw: str) -> None:
        key = self._key(raw)
        if key is not None:
            if self.server.store.delete(key):
                self._send(204)
            else:
                self._error(404, "no such key")

    def _gauge_name(self, name: str) -> str | None:
        """A valid, non-reserved metric name, or None after answering 400."""
        if not is_metric_name(name):
            self._error(400, f"invalid metric name {name!r}")
        elif name.startswith(RESERVED_GAUGE_PREFIXES):
            self._error(400, f"metric names starting with {RESERVED_GAUGE_PREFIXES} are reserved")
        else:
            return name
        return None

    def _gauge_put(self, raw: str) -> None:
        name = self._gauge_name(raw)
        body = self._read_body(MAX_GAUGE_BODY) if name else None
        if name is None or body is None:
            return
        try:
            value = float(body.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            self._error(400, "body must be a float")
            return
        if self.server.metrics.set_gauge(name, value):
            self._send(204)
        else:
            self._error(409, f"at most {MAX_GAUGES} custom gauges: delete one first")

    def _gauge_delete(self, raw: str) -> None:
        name = self._gauge_name(raw)
        if name is None:
            return
        if self.server.metrics.delete_gauge(name):
            self._send(204)
        else:
            self._error(404, "no such gauge")


# (first path segment, has a further segment) -> method -> handler
ROUTES: dict[tuple[str, bool], dict[str, Route]] = {
    ("health", False): {"GET": NodeHandler._health, "HEAD": NodeHandler._health},
    ("metrics", False): {"GET": NodeHandler._metrics},
    ("kv", True): {
        "GET": NodeHandler._kv_get,
        "PUT": NodeHandler._kv_put,
        "DELETE": NodeHandler._kv_delete,
    },
    ("gauges", True): {"PUT": NodeHandler._gauge_put, "DELETE": NodeHandler._gauge_delete},
}


# ---- process lifecycle ---------------------------------------------------------------------


class _Stop(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT to leave serve_forever at once."""


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="grid-node", description=DESCRIPTION)
    parser.add_argument("--port", type=_port, required=True, help="TCP port, 0 for any free one")
    parser.add_argument("--data-dir", type=_non_empty, required=True, help="where values live")
    parser.add_argument("--node-id", type=_non_empty, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--access-log", action="store_true", help="log each request on stderr")
    parser.add_argument(
        "--max-connections",
        type=_positive(int),
        default=MAX_CONNECTIONS,
        help="open connections served at once; more get 503",
    )
    parser.add_argument(
        "--head-timeout",
        type=_positive(float),
        default=HEAD_TIMEOUT,
        help="seconds a request line and headers may take",
    )
    return parser.parse_args(argv)


def report_ready(server: NodeServer) -> None:
    """Tell the spawner where we listen: node.json always, the ready pipe if inherited."""
    host, port = server.server_name, server.server_port
    info = {"port": port, "pid": os.getpid(), "node_id": server.node_id}
    write_atomic(os.path.join(server.store.data_dir, NODE_FILE), json.dumps(info).encode())
    url_host = f"[{host}]" if ":" in host else host
    print(f"grid-node {server.node_id} listening on http://{url_host}:{port}", flush=True)
    raw_fd = os.environ.pop(READY_FD_ENV, "")
    if not raw_fd:
        return
    try:
        fd = int(raw_fd)
        try:
            os.write(fd, f"{port}\n".encode())
        finally:
            os.close(fd)
    except (ValueError, OSError) as exc:
        print(f"grid-node: cannot report on {READY_FD_ENV}={raw_fd}: {exc}", file=sys.stderr)


def _install_stop_handlers(state: dict[str, NodeServer]) -> None:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        server = state.get("server")
        if server is not None:
            if server.stopping:
                return
            server.stopping = True
        raise _Stop

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)


def _shutdown(server: NodeServer) -> None:
    """Stop accepting, then give in-flight requests DRAIN_TIMEOUT to finish."""
    server.stopping = True
    server.server_close()
    if not server.metrics.wait_idle(DRAIN_TIMEOUT):
        print("grid-node: exiting with requests still in flight", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state: dict[str, NodeServer] = {}
    _install_stop_handlers(state)
    try:
        server = state["server"] = NodeServer(
            args.host,
            args.port,
            args.node_id,
            Store(args.data_dir),
            args.access_log,
            args.max_connections,
            args.head_timeout,
        )
        report_ready(server)
        server.serve_forever(poll_interval=SERVE_POLL)
    except _Stop:
        pass
    except OSError as exc:
        print(f"grid-node: {exc}", file=sys.stderr)
        return 1
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)
        if "server" in state:
            _shutdown(state["server"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
