"""Grid's own pages, served by every master: a live dashboard, a JSON API, Prometheus text.

Read-only views of Redis, so any master (leader or standby) can serve them:
`/` dashboard, `/api/status`, `/api/nodes`, `/api/agents`, `/api/events?limit=N&type=T`,
`/metrics` (by prometheus_client). Stdlib HTTP server in a daemon thread, with grid-node's
limits (`grid.node.httpguard`): a cap on open connections, a deadline for each request head,
a timeout on every read.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from grid.core.events import EVENT_TYPES, EventLog
from grid.core.state import GridState
from grid.node.httpguard import GuardedHandler, GuardedServer
from grid.workers.master.exposition import metrics_registry
from grid.workers.master.report import agents_with_node_counts, status_report

log = logging.getLogger(__name__)

READ_TIMEOUT = 10.0  # seconds any one read of a request may wait


def _handler(state: GridState, events: EventLog) -> type[BaseHTTPRequestHandler]:
    page = resources.files("grid.workers.master").joinpath("dashboard.html").read_bytes()
    registry = metrics_registry(state)

    class Handler(GuardedHandler):
        server_version = "grid"
        timeout = READ_TIMEOUT

        def log_message(self, format: str, *args: Any) -> None:  # stdlib name
            log.debug("http: " + format, *args)

        def do_GET(self) -> None:  # stdlib name
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            try:
                if url.path == "/":
                    self._send(page, "text/html; charset=utf-8")
                elif url.path == "/metrics":
                    self._send(generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4)
                elif url.path == "/api/status":
                    self._json(status_report(state))
                elif url.path == "/api/nodes":
                    self._json([n.as_dict() for n in state.nodes()])
                elif url.path == "/api/agents":
                    self._json([a.as_dict() for a in agents_with_node_counts(state)])
                elif url.path == "/api/events":
                    self._events(query)
                else:
                    self._json({"error": f"no such page {url.path}"}, HTTPStatus.NOT_FOUND)
            except Exception as exc:  # noqa: BLE001 - a page must answer, not kill the thread
                log.warning("http %s failed: %s", url.path, exc)
                self._json({"error": str(exc)}, HTTPStatus.SERVICE_UNAVAILABLE)

        def _events(self, query: dict[str, list[str]]) -> None:
            types = set(query.get("type", []))
            unknown = types - set(EVENT_TYPES)
            if unknown:
                self._json(
                    {"error": f"unknown event type {sorted(unknown)[0]}"}, HTTPStatus.BAD_REQUEST
                )
                return
            try:
                limit = max(1, min(1000, int(query.get("limit", ["50"])[0])))
            except ValueError:
                self._json({"error": "limit must be a number"}, HTTPStatus.BAD_REQUEST)
                return
            self._json([e.as_dict() for e in events.read(types=types or None, limit=limit)])

        def _json(self, value: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
            self._send(json.dumps(value, default=str).encode(), "application/json", status)

        def _send(self, body: bytes, ctype: str, status: HTTPStatus = HTTPStatus.OK) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

    return Handler


class WebServer:
    def __init__(self, state: GridState, events: EventLog, host: str, port: int) -> None:
        self.httpd = GuardedServer((host, port), _handler(state, events))
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="grid-web", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


#: ports tried after a taken one, before any free port: a second grid gets 8701, a third 8702
NEXT_PORTS = 10


def open_pages(state: GridState, events: EventLog, host: str, port: int) -> WebServer:
    """The pages on `port` or, when it is taken (another grid on this machine), on the
    next free one; OSError when none can be bound (a host that is not local, say)."""
    for candidate in range(port, min(port + 1 + NEXT_PORTS, 65536)) if port else ():
        try:
            return WebServer(state, events, host, candidate)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    return WebServer(state, events, host, 0)
