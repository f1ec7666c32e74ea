"""The agent's NodeSampler on a real Redis: real grid-node scrapes reach the metrics store."""

from __future__ import annotations

import logging
import os
import select
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from grid.autoscaler.metrics import MetricsStore
from grid.core.connection import redis_client
from grid.node.server import READY_FD_ENV
from grid.workers.agent.sampler import NodeSampler

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def node_endpoint(grid_node_command: list[str], tmp_path: Path) -> Iterator[str]:
    """A real grid-node on a kernel-chosen port."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [*grid_node_command, "--port", "0", "--data-dir", str(tmp_path), "--node-id", "good"],
        env={**os.environ, READY_FD_ENV: str(write_fd)},
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 15)
        port = int(os.read(read_fd, 64)) if ready else pytest.fail("grid-node did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.close(read_fd)
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def garbled_endpoint() -> Iterator[str]:
    """A workload whose /metrics is not the text format (an unquoted label value)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"# TYPE queue_depth gauge\nqueue_depth{shard=a} 3\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_garbled_node_is_skipped_and_named_the_others_are_stored(
    redis_url: str, node_endpoint: str, garbled_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis_client(redis_url)
    store = MetricsStore(client)
    nodes = [("bad", "web", garbled_endpoint), ("good", "web", node_endpoint)]
    sampler = NodeSampler(store, lambda: nodes, source="test", interval=60)
    start = time.time()
    with caplog.at_level(logging.WARNING, logger="grid.workers.agent.sampler"):
        assert sampler.sample_once() == 1
    (good,) = store.node_samples("good", start - 1, time.time() + 1)
    assert good["metrics"]["keys"] == 0
    assert store.node_samples("bad", start - 1, time.time() + 1) == []
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"node bad: unreadable /metrics from {garbled_endpoint}: line 2:")
    client.close()
