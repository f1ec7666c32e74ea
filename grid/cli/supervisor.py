"""`grid up`'s supervision of its children: restart with backoff, give up on a crash loop.

As supervisord or systemd do: a child that exits is started again after a delay that
doubles with each quick failure in a row (from `backoff_base`, capped at `backoff_max`);
a run that lasted `healthy_after` seconds was a good start, and the delay starts over.
More than `max_failures` exits within `window` seconds means the child keeps failing:
`check()` raises ChildFailing, naming it and saying why, and `grid up` stops the grid.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from grid.core.errors import GridError
from grid.core.redis_server import EmbeddedRedis, write_info
from grid.platforms.process import describe_exit, tail_file


@dataclass(frozen=True)
class RestartPolicy:
    backoff_base: float = 0.5
    backoff_max: float = 10.0
    healthy_after: float = 10.0
    max_failures: int = 5
    window: float = 60.0

    def delay(self, failures: int) -> float:
        """Wait before restarting a child that failed `failures` times in a row (>= 1)."""
        return min(self.backoff_base * 2.0 ** (failures - 1), self.backoff_max)


class Child(Protocol):
    """A process that `grid up` runs and restarts."""

    @property
    def name(self) -> str: ...

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The current process (in its own session), None before the first start."""

    def start(self) -> None:
        """Start it; GridError or OSError when it cannot."""

    def last_words(self) -> str:
        """The last line of its log: why it exited, when it says so."""


class Command:
    """A `grid ...` subprocess in its own session (Ctrl-C in the terminal reaches only
    `grid up`), its output appended to `log`."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def last_words(self) -> str:
        return tail_file(self.log, 1).strip()


class RedisChild:
    """The embedded Redis, restarted on the same port and data dir (append-only, so the
    data survives); `redis.json` is rewritten so other commands find the new process."""

    name = "redis"

    def __init__(self, server: EmbeddedRedis, home: Path) -> None:
        self.server = server
        self.home = home

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.server.process

    def start(self) -> None:
        self.server.start()
        write_info(self.home, self.server)

    def last_words(self) -> str:
        return tail_file(self.server.log, 1).strip()


@dataclass(frozen=True)
class Restart:
    """A child started again: what the `process_restarted` event records."""

    name: str
    pid: int
    exit_code: int | None  # None when the previous start itself failed
    why: str
    attempt: int  # restarts since its last good run

    @property
    def signal(self) -> str:
        """The signal that killed it ("" if it exited)."""
        if self.exit_code is None or self.exit_code >= 0:
            return ""
        try:
            return signal.Signals(-self.exit_code).name
        except ValueError:
            return f"signal {-self.exit_code}"


class ChildFailing(GridError):
    """A child exited more often than the policy allows: the grid cannot run."""


@dataclass
class _Slot:
    child: Child
    started: float = 0.0
    failures: int = 0  # quick exits in a row, for the backoff
    exits: collections.deque[float] = field(default_factory=collections.deque)
    restart_at: float | None = None  # set while it is dead and waits for its restart
    exit_code: int | None = None
    why: str = ""


class Supervisor:
    """Starts children, restarts those that die (call `check()` often), stops them."""

    def __init__(
        self,
        policy: RestartPolicy,
        say: Callable[[str], None],
        on_restart: Callable[[Restart], None] = lambda restart: None,
    ) -> None:
        self.policy = policy
        self.say = say
        self.on_restart = on_restart
        self._slots: list[_Slot] = []

    def start(self, child: Child) -> int:
        """Start a child for the first time; its errors are the caller's. Returns its pid."""
        child.start()
        self._slots.append(_Slot(child, started=time.monotonic()))
        assert child.process is not None
        return child.process.pid

    def check(self) -> None:
        """Notice exits and restart children whose delay is over, in the order they were
        added (Redis first). Raises ChildFailing when one keeps failing."""
        now = time.monotonic()
        for slot in self._slots:
            if slot.restart_at is None:
                proc = slot.child.process
                code = proc.poll() if proc is not None else None
                if code is not None:
                    self._exited(slot, code, describe_exit(code), now)
            elif now >= slot.restart_at:
                self._restart(slot, now)

    def _exited(self, slot: _Slot, code: int | None, why: str, now: float) -> None:
        policy = self.policy
        name = slot.child.name
        if now - slot.started >= policy.healthy_after:
            slot.failures = 0
        slot.failures += 1
        slot.exits.append(now)
        while now - slot.exits[0] > policy.window:
            slot.exits.popleft()
        if code is not None and code > 0:
            words = slot.child.last_words()
            why = f"{why}: {words}" if words else why
        if len(slot.exits) > policy.max_failures:
            raise ChildFailing(
                f"{name} keeps failing: {len(slot.exits)} exits within "
                f"{policy.window:.0f}s, the last one {why}"
            )
        delay = policy.delay(slot.failures)
        slot.restart_at, slot.exit_code, slot.why = now + delay, code, why
        self.say(f"{name} {why}; restarting it in {delay:.1f}s")

    def _restart(self, slot: _Slot, now: float) -> None:
        slot.restart_at = None
        slot.started = now
        child = slot.child
        try:
            child.start()
        except (GridError, OSError) as exc:
            self._exited(slot, None, f"failed to start: {exc}", time.monotonic())
            return
        assert child.process is not None
        pid = child.process.pid
        self.say(f"{child.name} restarted, pid {pid}")
        self.on_restart(Restart(child.name, pid, slot.exit_code, slot.why, slot.failures))

    def stop(self, names: Collection[str], timeout: float) -> None:
        """Stop these children for good: SIGTERM (Celery's warm shutdown; Redis flushes its
        append-only file), then SIGKILL to the process group after `timeout`."""
        slots = [s for s in self._slots if s.child.name in names]
        self._slots = [s for s in self._slots if s.child.name not in names]
        procs = [
            (s.child.name, s.child.process)
            for s in slots
            if s.restart_at is None and s.child.process is not None
        ]
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{name} did not stop in time: killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
