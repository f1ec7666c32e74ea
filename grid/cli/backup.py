"""`grid backup create|list|restore`: the whole control state to a file and back."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from grid.cli.common import Context, emit_json, json_option, pass_ctx, table
from grid.core.backup.files import backup_dir, list_backups
from grid.core.backup.service import create_backup, restore_backup
from grid.core.events import EventType

F = TypeVar("F", bound=Callable[..., Any])

PROGRESS_EVERY = 1.0  # seconds between progress lines


class _Progress:
    """Prints 'VERB: N keys (M lines)' on stderr at most once a second."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.last = time.monotonic()

    def __call__(self, keys: int, lines: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            click.echo(f"{self.verb}: {keys} keys ({lines} lines) so far", err=True)
            self.last = now


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.group()
def backup() -> None:
    """Back up and restore the grid's control state.

    A backup holds every `grid:` key of the state and events Redis (agent and node records
    and their indexes, desired sizes, pools, policies and their state, placement rules,
    events and their indexes, metrics, and any key added later), each with its type and TTL,
    in one gzip file of JSON lines with a SHA-256 checksum. Leases, agent id locks and
    Celery's queues are left out. The file holds credential hashes: it is created mode 0600.
    See docs/BACKUPS.md.
    """


def _folder_option(flag: str, what: str) -> Callable[[F], F]:
    return click.option(
        flag,
        "folder",
        type=click.Path(file_okay=False, path_type=Path),
        help=f"Folder {what}. [default: GRID_BACKUP_DIR, else <GRID_HOME>/backups]",
    )


@backup.command("create")
@_folder_option("--to", "to write the backup in")
@pass_ctx
def create(ctx: Context, folder: Path | None) -> None:
    """Write a backup; prints its path. Progress (keys written) goes to stderr."""
    done = create_backup(
        ctx.settings, folder or backup_dir(ctx.settings), progress=_Progress("backup")
    )
    header = done.header
    click.echo(
        f"backup: {header.total_keys} keys ({header.keys['state']} state, "
        f"{header.keys['events']} events) in {done.seconds:.2f}s",
        err=True,
    )
    click.echo(str(done.path))


@backup.command("list")
@_folder_option("--dir", "to list")
@json_option
@pass_ctx
def list_(ctx: Context, folder: Path | None, as_json: bool) -> None:
    """List backups, oldest first: when, trigger, keys, size (headers only, not verified)."""
    found = list_backups(folder or backup_dir(ctx.settings))
    if as_json:
        emit_json(
            [
                {
                    "path": str(b.path),
                    "name": b.path.name,
                    "size": b.path.stat().st_size,
                    "problem": b.problem or None,
                    **(b.header.model_dump() if b.header else {}),
                }
                for b in found
            ]
        )
        return
    rows = []
    for b in found:
        h = b.header
        rows.append(
            [
                b.path.name,
                _when(h.created) if h else "-",
                h.trigger if h else "-",
                h.total_keys if h else "-",
                f"{b.path.stat().st_size / 1024:.1f} KiB",
                b.problem or "",
            ]
        )
    table(rows, ["NAME", "CREATED", "TRIGGER", "KEYS", "SIZE", "PROBLEM"])


@backup.command("restore")
@click.argument("backup_file", metavar="BACKUP")
@click.option("--force", is_flag=True, help="Replace the Grid keys the target Redis holds.")
@pass_ctx
def restore(ctx: Context, backup_file: str, force: bool) -> None:
    """Restore BACKUP (a path, or a name in the backup folder) into the configured Redis.

    The file is verified whole first (checksum, counts, every line): a missing, truncated,
    corrupt or other-version file is refused in one line, exit 2, and Redis is untouched.
    A target that already holds Grid keys is refused unless --force, which deletes them
    first (leases and agent locks are kept). Running the same restore again is safe: an
    interrupted one is finished, without --force. Start the masters and agents afterwards:
    they bring the grid back to the restored desired state.
    """
    path = Path(backup_file)
    if not path.exists() and path.parent == Path("."):
        candidate = backup_dir(ctx.settings) / backup_file
        path = candidate if candidate.exists() else path
    done = restore_backup(ctx.settings, path, force=force, progress=_Progress("restore"))
    ctx.events.emit(
        EventType.BACKUP_RESTORED,
        f"restored backup {path.name} ({done.keys} keys)",
        file=path.name,
        created=done.header.created,
        keys=done.keys,
        replaced=done.replaced,
    )
    note = f", {done.replaced} keys replaced" if done.replaced else ""
    note += ", an interrupted restore finished" if done.resumed else ""
    click.echo(
        f"restored {done.keys} keys from {path.name} (made {_when(done.header.created)})"
        f"{note} in {done.seconds:.2f}s"
    )


COMMANDS = [backup]
