"""A throwaway systemd, running as PID 1 in a container, for the systemd adapter.

Two backends boot the same root, and `choose_backend()` picks one from the host's cgroups
(not from what is installed, so that a missing tool is reported rather than worked around):

- `nspawn` (`systemd-nspawn --boot`, commands through `nsenter -t INIT -a`) on a cgroup v1
  host whose cgroup2 `unified` mount lists a controller (`/sys/fs/cgroup/unified/
  cgroup.controllers` holds e.g. `hugetlb`): there crun refuses with "cgroups in hybrid mode
  not supported", while nspawn uses that mount only to track processes;
- `podman` (`podman run --systemd=always`, commands through `podman exec CTR`) elsewhere:
  a cgroup v1 host whose `unified` mount has no controllers (where these tests began and
  passed) or a pure cgroup v2 host.

`GRID_SYSTEMD_CONTAINER=podman|nspawn` overrides the choice.

The container's root is a folder: `usr/*` symlinks (merged /usr), a copy of the host's
/etc (with an empty fstab, a fresh machine-id and a real os-release file) and the host's
/usr mounted read-only. The host folders the nodes need (this repository, the virtualenv,
the Python install) are mounted read-only at their own paths, `units/` becomes the
container's /etc/systemd/system and `nodes/` (the adapter's data root) is mounted
read-write at its own path, so the adapter writes both locally while
`systemctl`/`journalctl` run inside through `prefix()`. The network is the host's: a node
listening on 127.0.0.1 in the container answers on the host.

`python -m tests.e2e.systemd_container` boots one and stops it: the host check that
scripts/services-up.sh runs, which says in one line what is wrong.

Used by tests/e2e/test_systemd_platform.py and bench/platforms.py.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

from grid.platforms.systemd import SystemdConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
SYSTEMD_BIN = "/usr/lib/systemd/systemd"
BACKEND_ENV = "GRID_SYSTEMD_CONTAINER"
BACKENDS = ("podman", "nspawn")
UNIFIED = Path("/sys/fs/cgroup/unified")
# what podman needs on these machines (no CAP_SYS_RESOURCE, no systemd on the host)
PODMAN = ["podman", "--cgroup-manager=cgroupfs"]
RUN_LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
# the PATH a command gets inside the container (nsenter would pass on the caller's environment)
CONTAINER_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOTED = ("running", "degraded")
SYSTEM_UNITS = "/etc/systemd/system"


class ContainerError(RuntimeError):
    """systemd could not be booted (or reached) in a container; the message is one line."""


def unified_controllers() -> list[str]:
    """Controllers on the cgroup2 `unified` mount of a cgroup v1 (hybrid) host; [] if none."""
    try:
        return (UNIFIED / "cgroup.controllers").read_text().split()
    except OSError:
        return []


def choose_backend() -> str:
    """The backend for this host: the override, else nspawn where crun cannot run systemd
    (controllers on the `unified` mount), else podman (the path these tests began on)."""
    forced = os.environ.get(BACKEND_ENV, "")
    if forced and forced not in BACKENDS:
        raise ContainerError(f"{BACKEND_ENV}={forced!r}: choose one of {', '.join(BACKENDS)}")
    return forced or ("nspawn" if unified_controllers() else "podman")


def why_backend(backend: str) -> str:
    """Why this backend runs here, for messages."""
    if os.environ.get(BACKEND_ENV):
        return f"{BACKEND_ENV}={backend}"
    listed = " ".join(unified_controllers())
    return f"{UNIFIED}/cgroup.controllers lists {listed}" if listed else "no cgroup2 controllers"


TOOLS = {"podman": ("podman",), "nspawn": ("systemd-nspawn", "nsenter")}
PACKAGES = {"podman": "podman", "systemd-nspawn": "systemd-container", "nsenter": "util-linux"}


def container_missing(backend: str | None = None) -> str | None:
    """Why a systemd container cannot be started here (one line), or None if it can be tried."""
    try:
        backend = backend or choose_backend()
    except ContainerError as err:
        return str(err)
    if not Path(SYSTEMD_BIN).exists():
        return f"{SYSTEMD_BIN} is missing (apt-get install -y systemd)"
    if not all(Path("/", name).is_symlink() for name in ("bin", "lib", "sbin")):
        return "the host has no merged /usr, which the container's root relies on"
    for tool in TOOLS[backend]:
        if shutil.which(tool) is None:
            return (f"{tool} is not installed (apt-get install -y {PACKAGES[tool]}); "
                    f"{backend} runs here as {why_backend(backend)}")  # fmt: skip
    return None


def host_mounts() -> list[Path]:
    """Host folders a node needs inside the container: this repo, the venv, the Python."""
    wanted = {REPO_ROOT, Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    wanted = {p for p in wanted if not p.is_relative_to("/usr")}
    return sorted(p for p in wanted if not any(p != q and p.is_relative_to(q) for q in wanted))


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _podman(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return _run([*PODMAN, *args], timeout)


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
    # nspawn recognises an OS tree by its os-release before /usr is mounted: the host's
    # /etc/os-release is a symlink into /usr, so it gets a real copy
    os_release = rootfs / "etc/os-release"
    os_release.unlink(missing_ok=True)
    shutil.copyfile("/usr/lib/os-release", os_release)


@dataclass
class SystemdContainer(ABC):
    """A booted systemd: adapter settings for it, commands inside it, and its removal."""

    name: str
    root: Path
    boot_seconds: float = 0.0
    init_pid: int = 0  # the container's PID 1 as the host sees it
    stopped: bool = field(default=False, repr=False)
    backend: ClassVar[str] = ""  # a key of BACKENDS
    boundary: ClassVar[str] = ""  # how a command gets in, for reports: `podman exec CTR`

    @property
    def unit_dir(self) -> Path:
        return self.root / "units"

    @property
    def data_root(self) -> Path:
        return self.root / "nodes"

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    def mounts(self) -> list[tuple[Path, Path, bool]]:
        """(host path, container path, read-only) for every bind mount."""
        binds = [(Path("/usr"), Path("/usr"), True), (self.unit_dir, Path(SYSTEM_UNITS), False)]
        binds.append((self.data_root, self.data_root, False))
        return binds + [(path, path, True) for path in host_mounts()]

    @abstractmethod
    def enter(self, env: Mapping[str, str]) -> tuple[str, ...]:
        """The argv prefix that runs a command inside the container with `env` set."""

    @abstractmethod
    def launch(self) -> None:
        """Start the container (rootfs and folders exist); return once it can be entered."""

    @abstractmethod
    def shutdown(self) -> None:
        """Halt systemd and remove whatever the backend made outside `root`."""

    def prefix(self, program: str, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
        return (*self.enter(env or {}), program)

    def exec(
        self, *argv: str, env: Mapping[str, str] | None = None, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        return _run([*self.enter(env or {}), *argv], timeout)

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

    def wait_booted(self, deadline: float) -> None:
        """Wait until `systemctl is-system-running` says running or degraded."""
        state = ""
        while state not in BOOTED:
            gone = self.exited()
            if gone or time.monotonic() >= deadline:
                why = gone or f"not booted in time ({state or 'no answer'})"
                raise ContainerError(f"systemd did not boot: {why}: {self.log()}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                state = self.exec("systemctl", "is-system-running", timeout=5).stdout.strip()
            if state not in BOOTED:
                time.sleep(0.05)

    def log(self) -> str:
        """The last lines systemd wrote on its console, on one line."""
        return ""

    def exited(self) -> str | None:
        """How the container ended, if it has (so a boot wait stops early); None if running."""
        return None

    def host_pids(self) -> list[int]:
        """Every process of the container's pid namespace, as host pids."""
        try:
            namespace = os.readlink(f"/proc/{self.init_pid}/ns/pid")
        except OSError:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if entry.name.isdigit() and os.readlink(entry / "ns/pid") == namespace:
                    found.append(int(entry.name))
        return found

    def traces(self) -> list[str]:
        """What of this container is still on the host (nothing, once `stop` has returned)."""
        return [f"files under {self.root}"] if self.root.exists() else []

    def stop(self) -> None:
        """Shut systemd down, remove the container and every file."""
        if self.stopped:
            return
        self.stopped = True
        try:
            self.shutdown()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class PodmanContainer(SystemdContainer):
    """systemd as the command of `podman run --systemd=always` (crun)."""

    backend: ClassVar[str] = "podman"
    boundary: ClassVar[str] = "podman exec CTR"

    def enter(self, env: Mapping[str, str]) -> tuple[str, ...]:
        pairs = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        return ("podman", "exec", *pairs, self.name)

    def launch(self) -> None:
        volumes: list[str] = []
        for source, target, read_only in self.mounts():
            volumes += ["-v", f"{source}:{target}" + (":ro" if read_only else "")]
        run = _podman(
            "run", "--detach", "--name", self.name, "--systemd=always",
            "--network", "host", "--stop-signal", "SIGRTMIN+3", *RUN_LIMITS, *volumes,
            "--rootfs", str(self.rootfs), SYSTEMD_BIN,
        )  # fmt: skip
        if run.returncode != 0:
            raise ContainerError(f"podman run failed: {' '.join(run.stderr.split())}")
        pid = _podman("inspect", "--format", "{{.State.Pid}}", self.name).stdout.strip()
        self.init_pid = int(pid or 0)

    def log(self) -> str:
        return " | ".join(_podman("logs", "--tail", "20", self.name).stdout.splitlines())

    def shutdown(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            _podman("stop", "--time", "10", self.name)
        _podman("rm", "--force", "--volumes", self.name)

    def traces(self) -> list[str]:
        exists = _podman("container", "exists", self.name).returncode == 0
        return [*super().traces(), *([f"podman container {self.name}"] if exists else [])]


@dataclass
class NspawnContainer(SystemdContainer):
    """systemd booted by `systemd-nspawn --boot`, in its own cgroups, unregistered.

    nspawn runs the container in the cgroup it is started from (`--keep-unit`, as there is no
    systemd on the host to ask for a scope), so a small shell first moves itself into a fresh
    cgroup of each hierarchy systemd writes (`name=systemd` and the cgroup2 one): two
    containers never share one, and `shutdown` removes them.
    """

    backend: ClassVar[str] = "nspawn"
    boundary: ClassVar[str] = "nsenter -t INIT -a"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    console: IO[bytes] | None = field(default=None, repr=False)
    own_cgroups: list[Path] = field(default_factory=list)

    @property
    def console_path(self) -> Path:
        return self.root / "console.log"

    def new_cgroups(self) -> list[Path]:
        """A cgroup for this container in each hierarchy systemd uses, under the caller's."""
        v2 = UNIFIED if (UNIFIED / "cgroup.procs").exists() else Path("/sys/fs/cgroup")
        mounts = {"name=systemd": Path("/sys/fs/cgroup/systemd"), "": v2}
        found = []
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            mount = mounts.get(controllers)
            if mount is not None and (mount / "cgroup.procs").exists():
                found.append(mount / path.lstrip("/") / self.name)
        return found

    def enter(self, env: Mapping[str, str]) -> tuple[str, ...]:
        pairs = [f"{key}={value}" for key, value in env.items()]
        return ("nsenter", "-t", str(self.init_pid), "-a", "env", "-i", CONTAINER_PATH, *pairs)

    def argv(self) -> list[str]:
        binds = [
            f"--bind{'-ro' if read_only else ''}={source}:{target}"
            for source, target, read_only in self.mounts()
        ]
        return [
            "systemd-nspawn", "--quiet", "--directory", str(self.rootfs),
            f"--machine={self.name}", "--boot", "--register=no", "--keep-unit",
            "--link-journal=no", "--console=read-only", "--settings=no", *binds,
        ]  # fmt: skip

    def launch(self) -> None:
        for cgroup in self.new_cgroups():
            cgroup.mkdir()
            self.own_cgroups.append(cgroup)
        moves = [f'echo $$ > "{cgroup}/cgroup.procs"' for cgroup in self.own_cgroups]
        script = " && ".join([*moves, 'exec "$@"'])
        self.console = self.console_path.open("wb")
        self.process = subprocess.Popen(
            ["sh", "-c", script, "sh", *self.argv()],
            stdin=subprocess.DEVNULL,
            stdout=self.console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.init_pid = self.wait_init()

    def wait_init(self, timeout: float = 30.0) -> int:
        """The container's PID 1 as the host sees it: nspawn's child running systemd."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        own_ns = os.readlink("/proc/self/ns/pid")
        while time.monotonic() < deadline:
            gone = self.exited()
            if gone:
                raise ContainerError(f"{gone}: {self.log()}")
            for pid in _children(self.process.pid):
                with contextlib.suppress(OSError):
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    if comm == "systemd" and os.readlink(f"/proc/{pid}/ns/pid") != own_ns:
                        return pid
            time.sleep(0.02)
        raise ContainerError(f"systemd-nspawn started no systemd within {timeout:g}s: {self.log()}")

    def exited(self) -> str | None:
        if self.process is None or self.process.poll() is None:
            return None
        return f"systemd-nspawn exited with {self.process.returncode}"

    def log(self) -> str:
        try:
            text = self.console_path.read_text(errors="replace")
        except OSError:
            return ""
        lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-8:])

    def shutdown(self) -> None:
        """SIGTERM makes nspawn halt the container (SIGRTMIN+3 to its systemd); past 20 s,
        killing PID 1 ends every process of its pid namespace (nspawn itself if none yet)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.init_pid or self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        if self.console is not None:
            self.console.close()
        for cgroup in reversed(self.own_cgroups):
            _remove_cgroup(cgroup)

    def traces(self) -> list[str]:
        found = super().traces()
        if self.process is not None and not self.exited():
            found.append(f"systemd-nspawn (pid {self.process.pid})")
        found += [f"cgroup {cgroup}" for cgroup in self.own_cgroups if cgroup.exists()]
        # a registration (machined) or a machinectl bind-mount folder, had nspawn made one
        for folder in ("/run/systemd/machines", "/run/systemd/nspawn/propagate"):
            if (Path(folder) / self.name).exists():
                found.append(f"{folder}/{self.name}")
        return found


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _remove_cgroup(cgroup: Path) -> None:
    """Remove a cgroup and the ones under it, deepest first (they hold no process by now)."""
    if not cgroup.is_dir():
        return
    for folder in sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        folder.rmdir()
    cgroup.rmdir()


CONTAINERS: dict[str, type[SystemdContainer]] = {
    c.backend: c for c in (PodmanContainer, NspawnContainer)
}


def start_systemd_container(
    root: Path, timeout: float = 60.0, backend: str | None = None
) -> SystemdContainer:
    """Boot systemd in a container whose files live under `root`; wait until it has booted."""
    backend = backend or choose_backend()
    root.mkdir(parents=True, exist_ok=True)
    container = CONTAINERS[backend](f"grid-systemd-{secrets.token_hex(4)}", root)
    try:
        _build_rootfs(container.rootfs)
        container.unit_dir.mkdir()
        container.data_root.mkdir()
        started = time.monotonic()
        container.launch()
        container.wait_booted(started + timeout)
        container.boot_seconds = time.monotonic() - started
    except BaseException:
        container.stop()
        raise
    return container


def main() -> int:
    """The host check: boot a systemd container and stop it; say in one line how it went."""
    missing = container_missing()
    if missing:
        print(f"systemd container: cannot run here: {missing}", file=sys.stderr)
        return 1
    backend = choose_backend()
    where = f"systemd container ({backend}, as {why_backend(backend)})"
    with tempfile.TemporaryDirectory(prefix="grid-systemd-probe-") as tmp:
        try:
            container = start_systemd_container(Path(tmp) / "ctr", backend=backend)
        except ContainerError as err:
            print(f"{where}: cannot boot here: {err}", file=sys.stderr)
            return 1
        container.stop()
    print(f"{where}: booted in {container.boot_seconds:.1f} s and stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
