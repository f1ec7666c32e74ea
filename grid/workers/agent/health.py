"""HTTP health probes of storage nodes (stdlib only: agents call this on every spawn)."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit


def fetch(endpoint: str, path: str, timeout: float = 1.0) -> bytes | None:
    """GET endpoint+path; the body on HTTP 200, else None (never raises for I/O)."""
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout
    )
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return body if resp.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def fetch_text(endpoint: str, path: str, timeout: float = 1.0) -> str | None:
    body = fetch(endpoint, path, timeout)
    return None if body is None else body.decode("utf-8", "replace")


def probe(endpoint: str, timeout: float = 1.0, path: str = "/health") -> dict[str, Any] | None:
    """GET endpoint+path; the decoded JSON body on HTTP 200, else None."""
    body = fetch(endpoint, path, timeout)
    if body is None:
        return None
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return None
    return data if isinstance(data, dict) else {"body": data}


def wait_healthy(
    endpoint: str, timeout: float, alive: Any = None, interval: float = 0.005
) -> dict[str, Any] | None:
    """Probe until healthy or `timeout`; stop early when `alive()` turns false.

    The interval starts at 5 ms and doubles to 50 ms: a fresh process answers within tens
    of milliseconds, a container within hundreds, and a probe of a closed port costs little.
    """
    deadline = time.monotonic() + timeout
    while True:
        body = probe(endpoint, timeout=min(1.0, max(0.05, deadline - time.monotonic())))
        if body is not None:
            return body
        if alive is not None and not alive():
            return None
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)
        interval = min(interval * 2, 0.05)
