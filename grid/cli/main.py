"""`grid`: one click group; exit 0 ok, 1 operation failed, 2 bad input; errors in one line."""

from __future__ import annotations

import sys

import click
import redis

from grid import __version__
from grid.cli import autoscale, backup, ops, read, run, sim
from grid.core.errors import GridError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="grid")
def cli() -> None:
    """Grid runs and scales fleets of storage nodes across machines.

    A master places nodes on agents; agents run them as processes, containers, pods or
    systemd services. State lives in Redis: set GRID_REDIS_URL, or run `grid up` for a
    local grid on an embedded Redis that other commands in this folder find by themselves.
    """


for module in (run, ops, read, autoscale, sim, backup):
    for command in module.COMMANDS:
        cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="grid", standalone_mode=False)
        if isinstance(code, int):  # click's Exit (e.g. after --help) in non-standalone mode
            sys.exit(code)
    except click.exceptions.Abort:
        click.echo("grid: aborted", err=True)
        sys.exit(1)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"grid: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"grid: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except GridError as exc:
        click.echo(f"grid: {exc}", err=True)
        sys.exit(exc.exit_code)
    except redis.RedisError as exc:
        click.echo(f"grid: Redis failed: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
