"""grid-node as real processes: key-value API, persistence, health, metrics, lifecycle."""

from __future__ import annotations

import http.client
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from grid.core.ports import free_port
from grid.node.server import LATENCY_BUCKETS, MAX_GAUGES, MAX_VALUE_BYTES, READY_FD_ENV
from grid.platforms.process import READY_FD_ENV as PLATFORM_READY_FD_ENV
from tests.helpers import series_by_key, wait_for

pytestmark = pytest.mark.timeout(120)

START_TIMEOUT = 15.0
BINARY = b"\x00\xff\xfe\x80 not utf-8 \x00" + bytes(range(256))


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data


@dataclass
class Node:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log: Path

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def metrics(self) -> dict[str, float]:
        resp = self.request("GET", "/metrics")
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        return series_by_key(resp.body.decode())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def read_ready_port(fd: int, proc: subprocess.Popen[bytes], timeout: float) -> int:
    """The `<port>\\n` line grid-node writes on its ready pipe."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, left))
        chunk = os.read(fd, 64) if ready else b""
        if not chunk:
            pytest.fail(f"no port on the ready pipe (got {data!r}, exit {proc.poll()})")
        data += chunk
    return int(data)


StartNode = Callable[..., Node]


@pytest.fixture
def start_node(grid_node_command: list[str], tmp_path: Path) -> Iterator[StartNode]:
    """Factory starting grid-node on --port 0; every node is stopped at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(data_dir: Path | None = None, node_id: str = "node-a", *extra: str) -> Node:
        data_dir = data_dir or tmp_path / "data"
        log = tmp_path / f"node-{len(started)}.log"
        read_fd, write_fd = os.pipe()
        argv = [*grid_node_command, "--port", "0", "--data-dir", str(data_dir)]
        try:
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [*argv, "--node-id", node_id, *extra],
                    env={**os.environ, READY_FD_ENV: str(write_fd)},
                    pass_fds=(write_fd,),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            started.append(proc)
            os.close(write_fd)
            write_fd = -1
            port = read_ready_port(read_fd, proc, START_TIMEOUT)
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        return Node(proc, port, data_dir, log)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def node(start_node: StartNode) -> Node:
    return start_node()


# ---- key-value API ------------------------------------------------------------------------


def test_put_get_delete_round_trip_with_binary_values(node: Node) -> None:
    assert node.request("PUT", "/kv/blob", BINARY).status == 201
    got = node.request("GET", "/kv/blob")
    assert (got.status, got.body) == (200, BINARY)
    assert got.headers["content-type"] == "application/octet-stream"

    assert node.request("PUT", "/kv/blob", b"\x00").status == 204  # overwrite
    assert node.request("GET", "/kv/blob").body == b"\x00"
    assert node.request("PUT", "/kv/empty", b"").status == 201
    assert node.request("GET", "/kv/empty").body == b""

    assert node.request("DELETE", "/kv/blob").status == 204
    missing = node.request("GET", "/kv/blob")
    assert missing.status == 404
    assert "error" in missing.json()
    assert node.request("DELETE", "/kv/blob").status == 404


@pytest.mark.parametrize(
    ("path", "key"),
    [("caf%C3%A9", "café"), ("a%2Fb%00c", "a/b\x00c"), ("sp%20ace", "sp ace"), ("x?q=1", "x")],
)
def test_keys_are_percent_decoded_path_segments(node: Node, path: str, key: str) -> None:
    assert node.request("PUT", f"/kv/{path}", key.encode()).status == 201
    assert node.request("GET", f"/kv/{path}").body == key.encode()
    assert node.request("GET", "/health").json()["keys"] == 1


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", "/kv", 404),
        ("GET", "/health/extra", 404),
        ("GET", "/kv/", 400),
        ("GET", "/kv/a/b", 400),
        ("GET", "/kv/" + "k" * 201, 400),
        ("POST", "/kv/a", 405),
        ("GET", "/gauges/a", 405),
        ("PATCH", "/kv/a", 501),
    ],
)
def test_bad_requests_get_short_json_errors(
    node: Node, method: str, path: str, status: int
) -> None:
    resp = node.request(method, path)
    assert resp.status == status
    assert resp.headers["content-type"] == "application/json"
    assert isinstance(resp.json()["error"], str)


@pytest.mark.parametrize("expect", [False, True])
def test_body_limits(node: Node, expect: bool) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    try:  # announce an oversized body without sending it: rejected before reading
        conn.putrequest("PUT", "/kv/big")
        conn.putheader("Content-Length", str(MAX_VALUE_BYTES + 1))
        if expect:
            conn.putheader("Expect", "100-continue")
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 413
        assert "error" in json.loads(resp.read())
    finally:
        conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    try:
        conn.putrequest("PUT", "/kv/nolength")
        conn.endheaders()
        assert conn.getresponse().status == 411
    finally:
        conn.close()
    assert node.request("GET", "/health").json()["keys"] == 0


def test_concurrent_writers(node: Node) -> None:
    errors: list[str] = []

    def writer(worker: int) -> None:
        for i in range(10):
            status = node.request("PUT", f"/kv/w{worker}-{i}", bytes([worker, i]) * 100).status
            if status != 201:
                errors.append(f"w{worker}-{i}: {status}")

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    health = node.request("GET", "/health").json()
    assert (health["keys"], health["bytes"]) == (40, 40 * 200)
    assert node.request("GET", "/kv/w3-7").body == bytes([3, 7]) * 100


def test_restart_keeps_data(start_node: StartNode, tmp_path: Path) -> None:
    first = start_node()
    first.request("PUT", "/kv/keep", BINARY)
    first.request("PUT", "/kv/over", b"old")
    first.request("PUT", "/kv/over", b"new")
    first.request("PUT", "/kv/gone", b"x")
    first.request("DELETE", "/kv/gone")
    assert first.stop() == 0

    second = start_node(first.data_dir)
    assert second.request("GET", "/kv/keep").body == BINARY
    assert second.request("GET", "/kv/over").body == b"new"
    assert second.request("GET", "/kv/gone").status == 404
    health = second.request("GET", "/health").json()
    assert (health["keys"], health["bytes"]) == (2, len(BINARY) + 3)


def test_restart_drops_partial_writes_and_skips_junk(start_node: StartNode) -> None:
    first = start_node()
    first.request("PUT", "/kv/k", b"v")
    assert first.stop() == 0
    kv_dir = first.data_dir / "kv"
    (kv_dir / "0123.tmp-1-2").write_bytes(b"half a write")
    (kv_dir / "junk").write_bytes(b"not a value file")

    second = start_node(first.data_dir)
    assert second.request("GET", "/health").json()["keys"] == 1
    assert second.request("GET", "/kv/k").body == b"v"
    assert not (kv_dir / "0123.tmp-1-2").exists()
    assert (kv_dir / "junk").exists()  # never delete what we cannot read
    wait_for(lambda: "ignoring unreadable file" in second.log.read_text(), timeout=5)


# ---- health and metrics -------------------------------------------------------------------


def test_health_fields(start_node: StartNode) -> None:
    node = start_node(node_id="health-1")
    node.request("PUT", "/kv/k", b"12345")
    health = node.request("GET", "/health").json()
    assert health["status"] == "ok"
    assert health["node_id"] == "health-1"
    assert health["port"] == node.port
    assert health["pid"] == node.proc.pid
    assert (health["keys"], health["bytes"]) == (1, 5)
    assert isinstance(health["uptime"], float) and 0 <= health["uptime"] < 60


def test_metrics_counters_increase(node: Node) -> None:
    before = node.metrics()
    for _ in range(3):
        assert node.request("GET", "/kv/missing").status == 404
    node.request("PUT", "/kv/a", b"abc")
    node.request("PUT", "/kv/b", b"defg")
    after = node.metrics()
    assert {key.split("{", 1)[0] for key in after} >= {
        "grid_node_requests_total",
        "grid_node_inflight_requests",
        "grid_node_request_latency_seconds_bucket",
        "grid_node_keys",
        "grid_node_bytes",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    }

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta('grid_node_requests_total{code="404",method="GET"}') == 3
    assert delta('grid_node_requests_total{code="201",method="PUT"}') == 2
    assert delta("grid_node_request_latency_seconds_count") == 6  # 5 + the first scrape
    assert delta("grid_node_request_latency_seconds_sum") > 0
    count = after["grid_node_request_latency_seconds_count"]
    assert after['grid_node_request_latency_seconds_bucket{le="+Inf"}'] == count
    assert after["grid_node_inflight_requests"] == 1  # the scrape itself
    assert (after["grid_node_keys"], after["grid_node_bytes"]) == (2, 7)
    assert after["process_cpu_seconds_total"] > 0
    assert after["process_resident_memory_bytes"] > 1_000_000


def test_metrics_text_is_valid_exposition_format(node: Node) -> None:
    """grid-node writes its text by hand (no prometheus_client, for start-up time): the
    official parser must read all of it, every sample under a declared family."""
    for body in (b"1", b"2.5", b"NaN", b"-Inf"):
        assert node.request("PUT", "/gauges/queue_depth", body).status == 204
        assert node.request("PUT", "/gauges/shard:open_total", b"3").status == 204
        node.request("GET", "/kv/missing")
        node.request("PUT", "/kv/a", b"abc")
        text = node.request("GET", "/metrics").body.decode()
        families = list(text_string_to_metric_families(text))

        names = [family.name for family in families]
        assert len(names) == len(set(names)), names
        kinds = {family.name: family.type for family in families}
        assert kinds == {  # the parser names a counter family without its `_total`
            "grid_node_requests": "counter",
            "grid_node_inflight_requests": "gauge",
            "grid_node_request_latency_seconds": "histogram",
            "grid_node_keys": "gauge",
            "grid_node_bytes": "gauge",
            "grid_node_uptime_seconds": "gauge",
            "process_cpu_seconds": "counter",
            "process_start_time_seconds": "gauge",
            "process_resident_memory_bytes": "gauge",
            "process_open_fds": "gauge",
            "queue_depth": "gauge",
            "shard:open_total": "gauge",
        }
        for family in families:
            assert family.documentation, family.name
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
            allowed = {family.name + s for s in suffixes.get(family.type, ("",))}
            assert family.samples, family.name
            assert {sample.name for sample in family.samples} <= allowed, family.name

        by_name = {family.name: family for family in families}
        requests = by_name["grid_node_requests"].samples
        assert {(s.labels["method"], s.labels["code"]) for s in requests} >= {
            ("GET", "404"),
            ("PUT", "201"),
        }
        latency = by_name["grid_node_request_latency_seconds"].samples
        buckets = [s for s in latency if s.name.endswith("_bucket")]
        assert [float(s.labels["le"]) for s in buckets] == [*LATENCY_BUCKETS, math.inf]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts)
        (count,) = [s.value for s in latency if s.name.endswith("_count")]
        assert counts[-1] == count > 0
        (gauge,) = by_name["queue_depth"].samples
        expected = float(body)
        assert math.isnan(gauge.value) if math.isnan(expected) else gauge.value == expected


def test_custom_gauges(node: Node) -> None:
    assert node.request("PUT", "/gauges/queue_depth", b"12.5").status == 204
    assert node.metrics()["queue_depth"] == 12.5
    assert node.request("PUT", "/gauges/queue_depth", b" -3\n").status == 204
    assert node.request("PUT", "/gauges/weird", b"NaN").status == 204
    samples = node.metrics()
    assert samples["queue_depth"] == -3
    assert math.isnan(samples["weird"])

    for name, body in [("9bad", b"1"), ("a-b", b"1"), ("grid_node_keys", b"1"), ("ok", b"x")]:
        assert node.request("PUT", f"/gauges/{name}", body).status == 400, name

    assert node.request("DELETE", "/gauges/queue_depth").status == 204
    assert "queue_depth" not in node.metrics()
    assert node.request("DELETE", "/gauges/queue_depth").status == 404


def test_custom_gauges_are_capped(node: Node) -> None:
    for i in range(MAX_GAUGES):
        assert node.request("PUT", f"/gauges/g{i}", b"1").status == 204
    over = node.request("PUT", "/gauges/one_more", b"1")
    assert over.status == 409 and str(MAX_GAUGES) in str(over.json()["error"])
    assert node.request("PUT", "/gauges/g0", b"2").status == 204  # an existing one: updated
    assert node.metrics()["g0"] == 2 and "one_more" not in node.metrics()
    assert node.request("DELETE", "/gauges/g1").status == 204
    assert node.request("PUT", "/gauges/one_more", b"1").status == 204  # room again


# ---- hostile and odd clients -----------------------------------------------------------------


def exchange(port: int, data: bytes, wait: float = 3.0) -> tuple[bytes, bool]:
    """Send raw bytes; everything the node answers and whether it closed the connection
    (False: still open after `wait` seconds of silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return out, False
            except ConnectionResetError:
                return out, True
            if not chunk:
                return out, True
            out += chunk


def statuses(raw: bytes) -> list[int]:
    return [int(line.split()[1]) for line in raw.split(b"\r\n") if line.startswith(b"HTTP/1.")]


SMUGGLED = b"0\r\n\r\nPUT /kv/smuggled HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"


@pytest.mark.parametrize(
    ("head", "status"),
    [
        # both framings: which one ends the body? refused, never guessed
        (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400),
        (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400),
        (b"Transfer-Encoding: chunked\r\n", 411),
        (b"", 411),  # no length at all: the bytes after the head are not a request either
        (b"Content-Length: \xb2\r\n", 400),  # latin-1 superscript two: isdigit() is True
        (b"Content-Length: 5\r\nContent-Length: 60\r\n", 400),
        (b"Content-Length: -5\r\n", 400),
    ],
    ids=["te-and-cl", "cl-and-te", "chunked", "no-length", "non-ascii-digit", "two", "negative"],
)
def test_bad_body_framing_is_refused_and_closed(node: Node, head: bytes, status: int) -> None:
    raw, closed = exchange(
        node.port, b"PUT /kv/a HTTP/1.1\r\nHost: n\r\n" + head + b"\r\n" + SMUGGLED
    )
    assert statuses(raw) == [status], raw
    assert closed, "the rest of the bytes must never be read as a request"
    assert node.request("GET", "/kv/smuggled").status == 404
    assert node.request("GET", "/kv/a").status == 404
    assert node.request("GET", "/health").json()["keys"] == 0


def test_an_unread_body_closes_the_connection(node: Node) -> None:
    """A request refused before its body is read (bad gauge name): the body is never parsed."""
    body = b"GET /health HTTP/1.1\r\n\r\n"
    head = f"PUT /gauges/9bad HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    raw, closed = exchange(node.port, head + body)
    assert statuses(raw) == [400] and closed


def test_expect_100_continue(node: Node) -> None:
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall(b"PUT /kv/e HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"abc")
        assert statuses(sock.recv(1024)) == [201]
        sock.sendall(b"GET /kv/e HTTP/1.1\r\n\r\n")  # the connection is still good
        reply = b""
        while not reply.endswith(b"abc"):  # head and body may come in two segments
            chunk = sock.recv(1024)
            assert chunk, reply
            reply += chunk
        assert statuses(reply) == [200]
    # refused before the body: the final answer at once, no 100, the body never sent
    for path, length, status in [("/nope", 3, 404), ("/kv/big", MAX_VALUE_BYTES + 1, 413)]:
        head = f"PUT {path} HTTP/1.1\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
        raw, closed = exchange(node.port, head.encode())
        assert statuses(raw) == [status] and closed, raw


def test_connections_over_the_cap_get_503(start_node: StartNode, tmp_path: Path) -> None:
    node = start_node(tmp_path / "capped", "capped", "--max-connections", "8")
    proc = psutil.Process(node.proc.pid)
    idle = [socket.create_connection(("127.0.0.1", node.port), timeout=5) for _ in range(8)]
    try:
        wait_for(lambda: proc.num_threads() >= 9, 10, what="8 connection threads")
        crowd = [socket.create_connection(("127.0.0.1", node.port), timeout=5) for _ in range(50)]
        for sock in crowd:
            assert statuses(sock.recv(1024)) == [503]
            assert sock.recv(1024) == b""  # and closed
            sock.close()
        assert proc.num_threads() <= 8 + 3, "threads must not grow with the connections"
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: node.request("GET", "/health").status == 200, 10, what="a free slot")


def test_a_trickled_head_is_cut_at_the_head_deadline(start_node: StartNode, tmp_path: Path) -> None:
    node = start_node(tmp_path / "slow", "slow", "--head-timeout", "1")
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 5:
            try:  # one byte of a header every 0.2 s: each read is quick, the head never ends
                sock.sendall(b"X")
                time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sock.setblocking(False)
            try:
                closed = sock.recv(1024) == b""
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed = True
            sock.setblocking(True)
            if closed:
                break
        assert closed, "the connection must be cut"
        assert time.monotonic() - started < 3
    assert node.request("GET", "/health").status == 200  # a normal client is served


# ---- lifecycle ------------------------------------------------------------------------------


def test_port_zero_reports_on_ready_fd_and_node_json(start_node: StartNode) -> None:
    node = start_node(node_id="ready-1")
    assert node.port > 0
    assert node.request("GET", "/health").json()["port"] == node.port
    info = json.loads((node.data_dir / "node.json").read_text())
    assert info == {"port": node.port, "pid": node.proc.pid, "node_id": "ready-1"}
    line = f"grid-node ready-1 listening on http://127.0.0.1:{node.port}"
    wait_for(lambda: line in node.log.read_text(), timeout=5, what="the listening line")


def test_ready_fd_name_matches_the_process_platform() -> None:

    assert READY_FD_ENV == PLATFORM_READY_FD_ENV


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_exits_zero_quickly(node: Node, sig: int) -> None:
    node.request("PUT", "/kv/k", b"v")
    start = time.monotonic()
    assert node.stop(sig, timeout=5) == 0
    assert time.monotonic() - start < 1.0
    assert node.log.read_text().count("\n") == 1  # just the listening line, no spam


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_finishes_in_flight_request(node: Node) -> None:
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    try:
        sock.sendall(b"PUT /kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
        wait_for(
            lambda: node.request("GET", "/metrics").body.count(b"inflight_requests 2"),
            timeout=5,
            what="the PUT to be in flight",
        )
        node.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: _refuses_connections(node.port), timeout=5, what="listener closed")
        assert node.proc.poll() is None  # still draining the PUT
        sock.sendall(b"def")
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 201"), (reply, node.log.read_text())
    finally:
        sock.close()
    assert node.proc.wait(5) == 0


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--data-dir", "d", "--node-id", "n"],
        ["--port", "70000", "--data-dir", "d", "--node-id", "n"],
        ["--port", "abc", "--data-dir", "d", "--node-id", "n"],
        ["--port", "0", "--node-id", "n"],
        ["--port", "0", "--data-dir", "d", "--node-id", ""],
        ["--port", "0", "--data-dir", "d", "--node-id", "n", "--bogus"],
    ],
)
def test_bad_args_exit_2(grid_node_command: list[str], tmp_path: Path, args: list[str]) -> None:
    result = subprocess.run(
        [*grid_node_command, *args], cwd=tmp_path, capture_output=True, timeout=30
    )
    assert result.returncode == 2
    assert b"usage: grid-node" in result.stderr
    assert not (tmp_path / "d").exists()


def test_port_in_use_exits_1(grid_node_command: list[str], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["--port", str(port), "--data-dir", str(tmp_path / "d"), "--node-id", "n"]
        result = subprocess.run([*grid_node_command, *argv], capture_output=True, timeout=30)
    assert result.returncode == 1
    assert len(result.stderr.decode().strip().splitlines()) == 1


def test_start_path_imports_no_heavy_modules() -> None:
    code = "import sys, grid.node.server; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, timeout=30
    ).stdout.decode()
    loaded = {name.split(".")[0] for name in out.split()}
    heavy = {"pydantic", "celery", "kombu", "redis", "psutil", "yaml", "click", "prometheus_client"}
    assert loaded & heavy == set()
    assert {name for name in out.split() if name.startswith("grid.")} <= {
        "grid.node",
        "grid.node.server",
        "grid.node.prom",
        "grid.node.httpguard",  # stdlib only, like the rest
    }


# ---- durability -----------------------------------------------------------------------------

# Runs grid-node with an audit hook that logs, in order, every rename, unlink and open of a
# directory the real server does (fsync itself has no audit event; the open of the directory
# is the only way to fsync it, and the server closes it right after).
AUDITED_NODE = """
import os, sys
log = open(sys.argv[1], "a", buffering=1)
def hook(event, args):
    if event in ("os.rename", "os.remove"):
        log.write(f"{event} {os.path.basename(str(args[0]))}\\n")
    elif event == "open" and isinstance(args[0], str) and args[2] & os.O_DIRECTORY:
        log.write(f"opendir {args[0]}\\n")
sys.addaudithook(hook)
from grid.node.server import main
sys.exit(main(sys.argv[2:]))
"""


def test_every_put_and_delete_syncs_the_directory_after_changing_it(tmp_path: Path) -> None:
    audit = tmp_path / "audit.log"
    data = tmp_path / "data"
    port = free_port()
    argv = ["--port", str(port), "--data-dir", str(data), "--node-id", "durable"]
    proc = subprocess.Popen(
        [sys.executable, "-c", AUDITED_NODE, str(audit), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        node = Node(proc, port, data, tmp_path / "unused.log")
        wait_for(lambda: audit.exists() and "node.json" in audit.read_text(), 15, what="start")
        start = len(audit.read_text().splitlines())
        assert node.request("PUT", "/kv/a", b"1").status == 201
        assert node.request("PUT", "/kv/a", b"2").status == 204
        assert node.request("DELETE", "/kv/a").status == 204
        lines = audit.read_text().splitlines()[start:]
    finally:
        proc.terminate()
        proc.wait(10)
    kv = f"opendir {data / 'kv'}"
    events = [line if line.startswith("opendir") else line.split()[0] for line in lines]
    # each change of the directory is followed by its sync, before the answer
    assert events == ["os.rename", kv, "os.rename", kv, "os.remove", kv], lines
