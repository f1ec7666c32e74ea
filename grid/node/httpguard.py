"""Limits for the stdlib HTTP servers: a cap on open connections, a deadline for a head.

`ThreadingHTTPServer` gives every connection a thread for as long as the peer keeps it
open, and reads a request head one line at a time with only a per-read timeout: a few
hundred half-open or trickling connections hold as many threads. `GuardedServer` refuses
connections over `max_connections` at once (503, closed), and `GuardedHandler` gives the
head of each request (request line and headers, from its first byte) `head_timeout`
seconds in all, after which one reaper thread shuts its socket down.

Stdlib only and in `grid.node`, the bottom layer both grid-node and the master's pages may
import: grid-node's start-up time is benchmarked and it imports nothing else of Grid.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

_BUSY_BODY = b'{"error": "too many open connections"}'
#: what a connection over the cap gets, sent without waiting, before it is closed
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
) % (len(_BUSY_BODY), _BUSY_BODY)


class GuardedServer(ThreadingHTTPServer):
    """A threading HTTP server with a connection cap and a reaper of overdue heads."""

    daemon_threads = True
    request_queue_size = 128  # connections waiting for accept; stdlib's 5 stalls bursts
    max_connections = 128
    head_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._heads: dict[socket.socket, float] = {}  # socket -> deadline of its head
        self._heads_lock = threading.Lock()
        self._reaper: threading.Thread | None = None
        self._closed = threading.Event()
        super().__init__(*args, **kwargs)

    # ---- the connection cap ---------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.setblocking(False)  # never let a peer that does not read block accept
                request.send(BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    # ---- the head deadline ----------------------------------------------------------

    def head_started(self, sock: socket.socket) -> None:
        """The first byte of a request head arrived on `sock`: its deadline starts now."""
        with self._heads_lock:
            self._heads[sock] = time.monotonic() + self.head_timeout
            if self._reaper is None:
                self._reaper = threading.Thread(
                    target=self._reap, name="http-head-reaper", daemon=True
                )
                self._reaper.start()

    def head_done(self, sock: socket.socket) -> None:
        with self._heads_lock:
            self._heads.pop(sock, None)

    def _reap(self) -> None:
        tick = min(0.5, self.head_timeout / 4)
        while not self._closed.wait(tick):
            now = time.monotonic()
            with self._heads_lock:
                late = [s for s, deadline in self._heads.items() if deadline <= now]
                for sock in late:
                    del self._heads[sock]
            for sock in late:  # the handler's blocked read returns at once, and it ends
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()


class GuardedHandler(BaseHTTPRequestHandler):
    """Registers each request head with its `GuardedServer` while it is being read."""

    server: GuardedServer

    def handle_one_request(self) -> None:
        try:
            # the idle wait between requests: the socket timeout
            first = cast(io.BufferedReader, self.rfile).peek(1)
        except OSError:  # TimeoutError included
            first = b""
        if not first:
            self.close_connection = True
            return
        self.server.head_started(self.connection)
        try:
            super().handle_one_request()
        finally:
            self.server.head_done(self.connection)

    def parse_request(self) -> bool:
        """Parse the head; the body and the answer are not under the head deadline."""
        try:
            return super().parse_request()
        finally:
            self.server.head_done(self.connection)
