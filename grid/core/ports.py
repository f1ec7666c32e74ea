"""Host ports for workloads that listen on the host: free now, and not handed out twice.

A port is free when the kernel lets us bind it; the node binds it moments later, so an
allocator also remembers what it handed out recently: concurrent spawns never get the same
port. With a `port_range`, ports come only from that range (firewalled hosts).
"""

from __future__ import annotations

import random
import socket
import threading
from collections import deque

RECENT = 256  # ports remembered as handed out


def free_port(host: str = "127.0.0.1", port: int = 0) -> int:
    """Bind `port` (0: any) on `host` and return the port bound; OSError if it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, port))
        bound: int = sock.getsockname()[1]
        return bound


class PortAllocator:
    def __init__(self, host: str = "", port_range: tuple[int, int] | None = None) -> None:
        self.host = host
        self.port_range = port_range
        self._recent: deque[int] = deque(maxlen=RECENT)
        self._lock = threading.Lock()

    def allocate(self) -> int:
        """A free port not handed out recently; OSError if none can be found."""
        for candidate in self._candidates():
            try:
                port = free_port(self.host, candidate)
            except OSError:
                continue
            with self._lock:
                if port not in self._recent:
                    self._recent.append(port)
                    return port
        where = f" in {self.port_range[0]}-{self.port_range[1]}" if self.port_range else ""
        raise OSError(f"no free port{where}")

    def _candidates(self) -> list[int]:
        if self.port_range is None:
            return [0] * 50  # the kernel picks; retried when it repeats a recent one
        low, high = self.port_range
        ports = list(range(low, high + 1))
        random.shuffle(ports)  # agents sharing a range rarely collide
        return ports
