"""What every command shares: settings, the Redis connection, output, durations."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import click

from grid.core.connection import Clients, Role, broker_url, connect, role_url
from grid.core.durations import parse_duration, parse_rate
from grid.core.errors import ConfigError, GridError, NotFoundError
from grid.core.events import EventLog
from grid.core.rtypes import Redis
from grid.core.settings import Settings, load_settings
from grid.core.state import AgentRecord, GridState, NodeRecord, Record

R = TypeVar("R", bound=Record)


class Context:
    """Lazily built settings and Redis clients (one per role) for one CLI invocation."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._clients: dict[str, Redis] = {}  # by URL: roles on one Redis share a client

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    def client(self, role: Role) -> Redis:
        """The role's client, checked on first use (exit 2 when its Redis does not answer)."""
        url = role_url(self.settings, role)
        if url not in self._clients:
            self._clients[url] = connect(self.settings, role)
        return self._clients[url]

    def clients(self) -> Clients:
        """What a master or agent runtime works with."""
        return Clients(state=self.client("state"), events=self.client("events"))

    @property
    def broker_url(self) -> str:
        return broker_url(self.settings)

    @property
    def redis(self) -> Redis:
        """The state store: records, desired sizes, policies, leases."""
        return self.client("state")

    @property
    def state(self) -> GridState:
        return GridState(self.redis)

    @property
    def events(self) -> EventLog:
        return EventLog.from_settings(self.client("events"), self.settings)

    def send_task(self, name: str, args: list[Any], queue: str) -> None:
        from grid.core.celery_app import app, configure  # noqa: PLC0415 - celery is slow to import

        self.client("broker")  # fail fast (exit 2) when the broker is unreachable
        configure(self.broker_url)
        app.send_task(name, args=args, queue=queue)

    def call_task(self, name: str, args: list[Any], queue: str, timeout: float) -> Any:
        from celery.exceptions import TimeoutError as CeleryTimeout  # noqa: PLC0415 - per command: a fast CLI start

        from grid.core.celery_app import app, configure  # noqa: PLC0415 - per command: a fast CLI start

        self.client("broker")
        configure(self.broker_url)
        result = app.send_task(name, args=args, queue=queue)
        try:
            return result.get(timeout=timeout)
        except CeleryTimeout:
            raise GridError(f"no answer within {timeout:.0f}s") from None
        finally:
            result.forget()


pass_ctx = click.make_pass_decorator(Context, ensure=True)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        click.echo(click.style(line, bold=True) if n == 0 else line)
    if not rows:
        click.echo("(none)")


def print_records(
    records: Sequence[R],
    as_json: bool,
    headers: Sequence[str],
    row: Callable[[R], Sequence[Any]],
) -> None:
    """`--json`: the records as a JSON list of their fields; otherwise a table of `row(r)`."""
    if as_json:
        emit_json([r.as_dict() for r in records])
        return
    table([row(r) for r in records], headers)


def known_node(state: GridState, node_id: str) -> NodeRecord:
    """The node's record; NotFoundError when there is none."""
    rec = state.node(node_id)
    if rec is None:
        raise NotFoundError(f"unknown node {node_id!r} (see 'grid nodes')")
    return rec


def known_agent(state: GridState, agent_id: str) -> AgentRecord:
    """The agent's record; NotFoundError when there is none."""
    rec = state.agent(agent_id)
    if rec is None:
        raise NotFoundError(f"unknown agent {agent_id!r} (see 'grid agents')")
    return rec


class _ParsedFloat(click.ParamType[float, Any]):
    """A number written with a unit (`parse` turns the text into the float), or a number."""

    def __init__(self, parse: Callable[[str], float]) -> None:
        self.parse = parse

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return self.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Duration(_ParsedFloat):
    """Seconds, written ``30s``, ``10m``, ``1h``, ``7d`` or a bare number of seconds."""

    name = "duration"

    def __init__(self) -> None:
        super().__init__(parse_duration)


class Rate(_ParsedFloat):
    """Events per second, written ``2/s``, ``30/min``, ``100/h`` or a bare number per second."""

    name = "rate"

    def __init__(self) -> None:
        super().__init__(parse_rate)


def ago(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return "-"
    delta = (now or time.time()) - ts
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    return f"{delta / 3600:.1f}h ago"


def wait_until(
    check: Callable[[], tuple[bool, str]],
    timeout: float,
    interval: float = 0.05,
    quiet: bool = False,
) -> bool:
    """Poll `check` (done, progress line) until done or timeout; prints progress on change."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        done, line = check()
        if line != last and not quiet:
            click.echo(line, err=True)
            last = line
        if done:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop the command: `grid.cli.main` prints the one line and exits with `code`
    (2: bad input, 1: the operation failed)."""
    raise (ConfigError if code == 2 else GridError)(message)
