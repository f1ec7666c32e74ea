"""The master's pages under hostile clients: a real pages server on a real Redis.

A trickled request head is cut at its deadline, and connections over the cap are answered
503 and closed at once, so that half-open connections cannot hold a thread each.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from grid.core.connection import redis_client
from grid.core.events import EventLog
from grid.core.state import GridState
from grid.workers.master.pages import WebServer
from tests.helpers import wait_for


@pytest.fixture
def pages(redis_url: str) -> Iterator[WebServer]:
    client = redis_client(redis_url)
    server = WebServer(GridState(client), EventLog(client), "127.0.0.1", 0)
    server.httpd.head_timeout = 1.0  # the default is 10 s; the same code path
    server.start()
    yield server
    server.stop()
    client.close()


def status_of(server: WebServer, path: str = "/api/status") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_trickled_head_is_cut(pages: WebServer) -> None:
    with socket.create_connection(("127.0.0.1", pages.port), timeout=5) as sock:
        sock.sendall(b"GET /api/status HTTP/1.0\r\n")
        started = time.monotonic()
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            while time.monotonic() - started < 5:
                sock.sendall(b"X")  # a header that never ends, one byte at a time
                time.sleep(0.1)
        assert time.monotonic() - started < 3
    assert status_of(pages) == 200


def test_connections_over_the_cap_get_503(pages: WebServer) -> None:
    cap = pages.httpd.max_connections
    before = threading.active_count()  # this process's threads before any connection
    held = [socket.create_connection(("127.0.0.1", pages.port), timeout=5) for _ in range(cap)]
    try:
        wait_for(
            lambda: threading.active_count() >= before + cap, 10, what=f"{cap} handler threads"
        )
        threads = threading.active_count()
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", pages.port), timeout=5) as extra:
                assert extra.recv(1024).startswith(b"HTTP/1.1 503")
        assert threading.active_count() <= threads
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: status_of(pages) == 200, 15, what="a free slot")
