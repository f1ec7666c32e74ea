"""The agent's metrics sampler (grid.workers.agent.sampler): what it derives from two scrapes.

The first tests scrape a real grid-node process (the default workload) around real requests;
the edge cases (counter resets, histogram deltas, bucket interpolation) use small texts in the
Prometheus exposition format that grid-node writes.
"""

from __future__ import annotations

import http.client
import math
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from grid.node.server import READY_FD_ENV
from grid.workers.agent.sampler import (
    LATENCY,
    Scrape,
    derive,
    quantile_from_buckets,
    read_series,
    scrape_of,
    sum_by_name,
)

START_TIMEOUT = 15.0
INF = math.inf


# ---- a real grid-node ---------------------------------------------------------------------


class Node:
    """One grid-node process on a kernel-chosen port, spoken to over one keep-alive connection.

    One connection means one server thread handling the requests in order, so each request
    is counted in the node's metrics before the next one is read: exact counts, no races.
    """

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self._conn.request(method, path, body=body)
        resp = self._conn.getresponse()
        return resp.status, resp.read()

    def metrics_text(self) -> str:
        status, body = self.request("GET", "/metrics")
        assert status == 200
        return body.decode()

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _ready_port(fd: int, proc: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 64) if ready else b""
        if not chunk:
            pytest.fail(f"grid-node wrote no port on its ready pipe (exit {proc.poll()})")
        data += chunk
    return int(data)


StartNode = Callable[[], Node]


@pytest.fixture
def start_node(grid_node_command: list[str], tmp_path: Path) -> Iterator[StartNode]:
    """Start grid-node on --port 0 over one data dir; every node is stopped at teardown."""
    started: list[Node] = []

    def start() -> Node:
        read_fd, write_fd = os.pipe()
        try:
            with (tmp_path / "node.log").open("ab") as log:
                proc = subprocess.Popen(
                    [*grid_node_command, "--port", "0", "--data-dir", str(tmp_path / "data"),
                     "--node-id", "sampled"],
                    env={**os.environ, READY_FD_ENV: str(write_fd)},
                    pass_fds=(write_fd,),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            os.close(write_fd)
            write_fd = -1
            node = Node(proc, 0)
            started.append(node)
            node.port = _ready_port(read_fd, proc)
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        return node

    yield start
    for node in started:
        node.stop()


def test_derive_from_two_scrapes_of_a_real_node(start_node: StartNode) -> None:
    node = start_node()
    assert node.request("PUT", "/gauges/queue_depth", b"7.5")[0] == 204
    first_text = node.metrics_text()
    requests = 40
    for i in range(requests // 2):
        assert node.request("PUT", f"/kv/k{i}", b"v" * 10)[0] == 201
        assert node.request("GET", f"/kv/k{i}")[0] == 200
    second_text = node.metrics_text()

    # Chosen timestamps make every rate exact: 2 s between the scrapes.
    prev, cur = scrape_of(first_text, 100.0), scrape_of(second_text, 102.0)
    out = derive(prev, cur)
    before, after = (
        sum_by_name(read_series(first_text)),
        sum_by_name(read_series(second_text)),
    )

    # The first scrape is itself counted once it has been answered: 40 + 1 requests.
    assert out["request_rate"] == pytest.approx((requests + 1) / 2.0)
    cpu = after["process_cpu_seconds_total"] - before["process_cpu_seconds_total"]
    assert out["cpu_percent"] == pytest.approx(100.0 * cpu / 2.0)
    assert out["cpu_percent"] >= 0.0
    lat_sum = after[f"{LATENCY}_sum"] - before[f"{LATENCY}_sum"]
    assert out["latency_avg_ms"] == pytest.approx(1000.0 * lat_sum / (requests + 1))
    # The median lies inside the histogram: above 0, at most the largest finite bucket.
    assert 0.0 < out["latency_p50_ms"] <= 10_000.0
    assert cur.buckets[INF] - prev.buckets[INF] == requests + 1

    # Gauges pass through: Grid's own under short names, a custom one under its own name.
    assert out["keys"] == requests // 2
    assert out["bytes"] == 10 * (requests // 2)
    assert out["inflight"] == 1.0  # the second /metrics request itself was being served
    assert out["rss_bytes"] > 1_000_000
    assert out["queue_depth"] == 7.5
    assert not [k for k in out if k.startswith(("process_", "python_", LATENCY))]
    assert "grid_node_requests_total" not in out

    # A single scrape gives the gauges only: no rate without a previous sample.
    alone = derive(None, cur)
    assert alone["queue_depth"] == 7.5
    assert not {"request_rate", "cpu_percent", "latency_avg_ms", "latency_p50_ms"} & set(alone)


def test_counter_reset_of_a_restarted_node_gives_no_rate(start_node: StartNode) -> None:
    node = start_node()
    for i in range(30):
        assert node.request("PUT", f"/kv/r{i}", b"x")[0] == 201
    prev = scrape_of(node.metrics_text(), 100.0)
    node.stop()
    restarted = start_node()  # same data dir: the keys survive, the counters start again
    for i in range(3):
        assert restarted.request("GET", f"/kv/r{i}")[0] == 200
    cur = scrape_of(restarted.metrics_text(), 105.0)
    assert cur.totals["grid_node_requests_total"] < prev.totals["grid_node_requests_total"]

    out = derive(prev, cur)
    assert "request_rate" not in out
    assert "latency_avg_ms" not in out
    assert "latency_p50_ms" not in out
    assert out["keys"] == 30  # gauges still pass through


# ---- the exposition text the node writes, for edge cases ------------------------------------


def exposition(
    requests: dict[tuple[str, str], float],
    buckets: dict[float, float],
    lat_sum: float,
    cpu: float,
    gauges: dict[str, float] | None = None,
) -> str:
    """Text like grid-node's /metrics: buckets are cumulative counts by upper bound."""
    lines = ["# TYPE grid_node_requests_total counter"]
    for (method, code), count in requests.items():
        lines.append(f'grid_node_requests_total{{method="{method}",code="{code}"}} {count}')
    lines.append(f"# TYPE {LATENCY} histogram")
    for bound, count in sorted(buckets.items()):
        le = "+Inf" if math.isinf(bound) else repr(bound)
        lines.append(f'{LATENCY}_bucket{{le="{le}"}} {count}')
    lines.append(f"{LATENCY}_sum {lat_sum}")
    lines.append(f"{LATENCY}_count {max(buckets.values(), default=0)}")
    lines.append(f"process_cpu_seconds_total {cpu}")
    lines.append("process_open_fds 12")
    lines.append("python_gc_objects_collected_total 5")
    lines.append("grid_node_inflight_requests 2")
    for name, value in (gauges or {}).items():
        lines.append(f"# TYPE {name} gauge")
        lines.append(f"{name} {value}")
    return "\n".join(lines) + "\n"


PREV = exposition(
    {("GET", "200"): 4, ("PUT", "201"): 2},
    {0.005: 3, 0.01: 5, 0.1: 6, INF: 6},
    lat_sum=0.05,
    cpu=1.0,
)
CUR = exposition(
    {("GET", "200"): 10, ("PUT", "201"): 10},
    {0.005: 3, 0.01: 15, 0.1: 16, INF: 16},
    lat_sum=0.125,
    cpu=1.5,
    gauges={"queue_depth": 3, "shards_open": 11},
)


def test_derive_rates_latency_and_median_from_bucket_deltas() -> None:
    out = derive(scrape_of(PREV, 10.0), scrape_of(CUR, 12.0))
    assert out["request_rate"] == pytest.approx((20 - 6) / 2.0)  # label sets summed
    assert out["cpu_percent"] == pytest.approx(25.0)  # 0.5 CPU-second in 2 s
    assert out["latency_avg_ms"] == pytest.approx(1000.0 * 0.075 / 10)
    # Deltas {0.005: 0, 0.01: 10, 0.1: 10, +Inf: 10}: the 5th of 10 lies half-way through
    # (0.005, 0.01]. From the cumulative counts alone it would be 7.08 ms.
    assert out["latency_p50_ms"] == pytest.approx(7.5)
    assert out["queue_depth"] == 3.0
    assert out["shards_open"] == 11.0
    assert out["inflight"] == 2.0
    assert "process_open_fds" not in out
    assert "python_gc_objects_collected_total" not in out


def test_derive_without_new_requests_gives_zero_rate_and_no_latency() -> None:
    out = derive(scrape_of(PREV, 10.0), scrape_of(PREV, 11.0))
    assert out["request_rate"] == 0.0
    assert out["cpu_percent"] == 0.0
    assert "latency_avg_ms" not in out
    assert "latency_p50_ms" not in out


@pytest.mark.parametrize(("dt"), [0.0, -1.0], ids=["same-time", "clock-went-back"])
def test_derive_with_no_elapsed_time_gives_gauges_only(dt: float) -> None:
    out = derive(scrape_of(PREV, 10.0), scrape_of(CUR, 10.0 + dt))
    assert out == {"inflight": 2.0, "queue_depth": 3.0, "shards_open": 11.0}


def test_derive_counter_reset_drops_every_rate() -> None:
    restarted = exposition({("GET", "200"): 1}, {0.005: 1, INF: 1}, lat_sum=0.001, cpu=0.1)
    out = derive(scrape_of(CUR, 10.0), scrape_of(restarted, 15.0))
    assert out == {"inflight": 2.0}


def test_derive_counter_missing_in_one_scrape_gives_no_rate() -> None:
    no_requests_yet = exposition({}, {INF: 0}, lat_sum=0.0, cpu=0.2)
    out = derive(scrape_of(no_requests_yet, 1.0), scrape_of(PREV, 2.0))
    assert "request_rate" not in out
    assert out["cpu_percent"] == pytest.approx(80.0)


def test_scrape_of_sums_labels_and_reads_buckets() -> None:
    scrape = scrape_of(CUR, 5.0)
    assert isinstance(scrape, Scrape)
    assert scrape.ts == 5.0
    assert scrape.totals["grid_node_requests_total"] == 20.0
    assert scrape.buckets == {0.005: 3.0, 0.01: 15.0, 0.1: 16.0, INF: 16.0}


# ---- quantile_from_buckets ------------------------------------------------------------------

QUANTILE_CASES = [
    pytest.param(0.5, {}, None, id="no-buckets"),
    pytest.param(0.5, {0.1: 0, INF: 0}, None, id="no-observations"),
    pytest.param(0.5, {0.1: 10, INF: 10}, 0.05, id="interpolate-from-zero"),
    pytest.param(0.5, {0.005: 3, 0.1: 5, INF: 6}, 0.005, id="rank-on-a-bound"),
    pytest.param(0.75, {0.005: 3, 0.1: 5, INF: 6}, 0.07625, id="interpolate-inside"),
    pytest.param(0.5, {0.001: 0, 0.01: 0, 0.1: 4, INF: 4}, 0.055, id="empty-low-buckets"),
    pytest.param(0.5, {0.1: 1, INF: 10}, 0.1, id="in-inf-bucket-gives-last-bound"),
    pytest.param(1.0, {0.1: 4, 1.0: 4, INF: 4}, 0.1, id="q1-first-bound-holding-all"),
    pytest.param(0.5, {1.0: 4, 0.5: 2}, 0.5, id="no-inf-unsorted"),
    pytest.param(0.9, {0.25: 2, 0.5: 4, 1.0: 10, INF: 10}, 0.9166666666666666, id="p90"),
]


@pytest.mark.parametrize(("q", "deltas", "expected"), QUANTILE_CASES)
def test_quantile_from_buckets(
    q: float, deltas: dict[float, float], expected: float | None
) -> None:
    got = quantile_from_buckets(q, deltas)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)
