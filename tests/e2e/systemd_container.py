"""A throwaway systemd, running as PID 1 in a podman container, for the systemd adapter.

The container's root is a folder: `usr/*` symlinks (merged /usr), a copy of the host's
/etc (with an empty fstab and a fresh machine-id) and the host's /usr mounted read-only.
The host folders the nodes need (this repository, the virtualenv, the Python install) are
mounted read-only at their own paths, `units/` becomes the container's /etc/systemd/system
and `nodes/` (the adapter's data root) is mounted read-write at its own path, so the adapter
writes both locally while `systemctl`/`journalctl` run through `podman exec`. The network is
the host's: a node listening on 127.0.0.1 in the container answers on the host.

Used by tests/e2e/test_systemd_platform.py and bench/platforms.py.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grid.platforms.systemd import SystemdConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEMD_BIN = "/usr/lib/systemd/systemd"
# what podman needs on these machines (no CAP_SYS_RESOURCE, no systemd on the host)
PODMAN = ["podman", "--cgroup-manager=cgroupfs"]
RUN_LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def podman_missing() -> str | None:
    """Why a systemd container cannot be started here, or None if it can be tried."""
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install -y podman)"
    if not Path(SYSTEMD_BIN).exists():
        return f"{SYSTEMD_BIN} is missing (apt-get install -y systemd)"
    if not all(Path("/", name).is_symlink() for name in ("bin", "lib", "sbin")):
        return "the host has no merged /usr, which the container's root relies on"
    return None


def host_mounts() -> list[Path]:
    """Host folders a node needs inside the container: this repo, the venv, the Python."""
    wanted = {REPO_ROOT, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    wanted = {p for p in wanted if not p.is_relative_to("/usr")}
    return sorted(p for p in wanted if not any(p != q and p.is_relative_to(q) for q in wanted))


def _podman(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _build_rootfs(rootfs: Path) -> None:
    for name in ("usr", "var/tmp", "tmp", "run", "proc", "sys", "dev", "root"):
        (rootfs / name).mkdir(parents=True, exist_ok=True)
    for name in ("bin", "lib", "lib64", "sbin"):
        if Path("/", name).is_symlink():
            (rootfs / name).symlink_to(os.readlink(Path("/", name)))
    shutil.copytree(
        "/etc",
        rootfs / "etc",
        symlinks=True,
        ignore=lambda folder, names: names if folder == "/etc/systemd/system" else [],
    )
    (rootfs / "etc/fstab").write_text("")
    (rootfs / "etc/machine-id").write_text(secrets.token_hex(16) + "\n")


@dataclass
class SystemdContainer:
    name: str
    root: Path
    boot_seconds: float = 0.0
    stopped: bool = field(default=False, repr=False)

    @property
    def unit_dir(self) -> Path:
        return self.root / "units"

    @property
    def data_root(self) -> Path:
        return self.root / "nodes"

    def prefix(self, program: str) -> tuple[str, ...]:
        return ("podman", "exec", self.name, program)

    def exec(self, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return _podman("exec", self.name, *argv, timeout=timeout)

    def config(self, **overrides: Any) -> SystemdConfig:
        """Adapter settings that drive this container's systemd."""
        values: dict[str, Any] = {
            "unit_dir": str(self.unit_dir),
            "data_root": str(self.data_root),
            "systemctl": self.prefix("systemctl"),
            "journalctl": self.prefix("journalctl"),
            **overrides,
        }
        return SystemdConfig(**values)

    def stop(self) -> None:
        """Shut systemd down (SIGRTMIN+3), remove the container and every file."""
        if self.stopped:
            return
        self.stopped = True
        with contextlib.suppress(subprocess.TimeoutExpired):
            _podman("stop", "--time", "10", self.name)
        _podman("rm", "--force", "--volumes", self.name)
        shutil.rmtree(self.root, ignore_errors=True)


def start_systemd_container(root: Path, timeout: float = 60.0) -> SystemdContainer:
    """Boot systemd in a container whose files live under `root`; wait until it has booted."""
    root.mkdir(parents=True, exist_ok=True)
    container = SystemdContainer(name=f"grid-systemd-{secrets.token_hex(4)}", root=root)
    try:
        _build_rootfs(root / "rootfs")
        container.unit_dir.mkdir()
        container.data_root.mkdir()
        volumes = ["-v", "/usr:/usr:ro", "-v", f"{container.unit_dir}:/etc/systemd/system"]
        volumes += ["-v", f"{container.data_root}:{container.data_root}"]
        for path in host_mounts():
            volumes += ["-v", f"{path}:{path}:ro"]
        started = time.monotonic()
        run = _podman(
            "run", "--detach", "--name", container.name, "--systemd=always",
            "--network", "host", "--stop-signal", "SIGRTMIN+3", *RUN_LIMITS, *volumes,
            "--rootfs", str(root / "rootfs"), SYSTEMD_BIN,
        )  # fmt: skip
        if run.returncode != 0:
            raise RuntimeError(f"podman run failed: {run.stderr.strip()}")
        state = ""
        deadline = started + timeout
        while state not in ("running", "degraded"):
            if time.monotonic() >= deadline:
                logs = _podman("logs", "--tail", "20", container.name).stdout
                raise RuntimeError(f"systemd did not boot within {timeout:g}s ({state}): {logs}")
            state = container.exec("systemctl", "is-system-running").stdout.strip()
            if state not in ("running", "degraded"):
                time.sleep(0.05)
        container.boot_seconds = time.monotonic() - started
    except BaseException:
        container.stop()
        raise
    return container
