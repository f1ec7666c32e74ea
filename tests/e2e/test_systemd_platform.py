"""The systemd adapter against a real systemd: PID 1 of a container (real path, no fakes).

The session boots systemd in a container (tests/e2e/systemd_container.py; 0.5-1.5 s) and the
adapter drives it through that container's command prefix, writing unit files into the
folder mounted as the container's /etc/systemd/system. The backend depends on the host
(`choose_backend`): `podman exec CTR systemctl|journalctl` where crun can run systemd (cgroup
v2, or cgroup v1 whose `unified` mount has no controllers), `nsenter -t INIT -a systemctl`
into a `systemd-nspawn --boot` container elsewhere (cgroup v1 with a controller such as
hugetlb on the `unified` mount, where crun refuses). Nodes run grid-node from this
repository and listen on the host network, so health probes go to 127.0.0.1 as usual.
Without the backend's tools the tests skip locally and fail under CI=true; a container that
does not boot fails them with one line saying why.

Not covered here: enforcement of MemoryMax/CPUQuota. On a cgroup v1 host both backends give
the container's systemd only the name=systemd and cgroup2 (controller-less) hierarchies
writable, so the limits are checked as systemd reports them (`systemctl show`), not as the
kernel applies them.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from grid.core.naming import LABEL_MANAGED, LABEL_NODE_ID, node_labels
from grid.platforms.base import NodeSpec, Platform, WorkloadState, WorkloadStatus
from grid.platforms.systemd import SystemdPlatform
from grid.workers.agent.health import wait_healthy
from tests.e2e.conformance import HEALTH_TIMEOUT, PlatformConformance
from tests.e2e.systemd_container import (
    REPO_ROOT,
    ContainerError,
    SystemdContainer,
    container_missing,
    start_systemd_container,
)
from tests.helpers import require, wait_for

AGENT_ID = "conf-agent"
USER_ENV = {"XDG_RUNTIME_DIR": "/run/user/0"}


def boot(root: Path) -> SystemdContainer:
    """A booted container, or the test skipped (tools missing) or failed with one line."""
    missing = container_missing()
    require(missing is None, f"no systemd container: {missing}")
    try:
        return start_systemd_container(root)
    except ContainerError as err:
        failure = str(err)
    pytest.fail(f"systemd container: {failure}", pytrace=False)  # outside `except`: one line


@pytest.fixture(scope="session")
def systemd_container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemdContainer]:
    container = boot(tmp_path_factory.mktemp("systemd"))
    try:
        yield container
    finally:
        container.stop()


class Nodes:
    """Makes adapters and specs for one test, and removes whatever they left running."""

    def __init__(self, make: Callable[[], SystemdPlatform]) -> None:
        self._make = make
        self.platforms: list[SystemdPlatform] = []
        self.node_ids: list[str] = []

    def platform(self) -> SystemdPlatform:
        platform = self._make()
        self.platforms.append(platform)
        return platform

    def spec(self, **overrides: object) -> NodeSpec:
        node_id = f"sd-{secrets.token_hex(4)}"
        self.node_ids.append(node_id)
        values: dict[str, object] = {
            "node_id": node_id,
            "agent_id": AGENT_ID,
            "pool": "default",
            "command": [sys.executable, "-m", "grid.node.server"],
            "env": {"PYTHONPATH": str(REPO_ROOT)},
            "labels": node_labels(node_id, AGENT_ID, "default"),
        }
        values.update(overrides)
        return NodeSpec(**values)  # type: ignore[arg-type]

    def cleanup(self) -> None:
        platform = self._make()
        for node_id in self.node_ids:
            platform.stop(node_id, grace=1)
        for p in [*self.platforms, platform]:
            p.close()


@pytest.fixture
def nodes(systemd_container: SystemdContainer) -> Iterator[Nodes]:
    config = systemd_container.config(restart_sec=0.2, stop_timeout=5)
    made = Nodes(lambda: SystemdPlatform(config, AGENT_ID))
    yield made
    made.cleanup()
    assert list(systemd_container.unit_dir.iterdir()) == [], "unit files left behind"
    assert list(systemd_container.data_root.iterdir()) == [], "node folders left behind"


class TestSystemdConformance(PlatformConformance):
    @pytest.fixture
    def make_platform(self, nodes: Nodes) -> Callable[[], Platform]:
        return nodes.platform

    @pytest.fixture
    def make_spec(self, nodes: Nodes) -> Callable[..., NodeSpec]:
        return nodes.spec

    @pytest.fixture
    def bad_spec(self, nodes: Nodes) -> NodeSpec:
        return nodes.spec(command=["/nonexistent/grid-node"])


def show(container: SystemdContainer, unit: str, *props: str) -> dict[str, str]:
    out = container.exec("systemctl", "show", "-p", ",".join(props), unit).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_container_boot_time(
    systemd_container: SystemdContainer, record_property: Callable[[str, object], None]
) -> None:
    record_property("systemd_boot_seconds", round(systemd_container.boot_seconds, 3))
    record_property("systemd_backend", systemd_container.backend)
    print(f"systemd container ({systemd_container.backend}) booted in "
          f"{systemd_container.boot_seconds * 1000:.0f} ms")  # fmt: skip
    assert systemd_container.boot_seconds < 30
    pid1 = systemd_container.exec("cat", "/proc/1/comm")
    assert pid1.stdout.strip() == "systemd", pid1


def test_stop_leaves_nothing(tmp_path: Path) -> None:
    """A container stopped with a node running leaves no process, registration or file."""
    container = boot(tmp_path / "ctr")
    try:
        platform = SystemdPlatform(container.config(), AGENT_ID)
        spec = Nodes(lambda: platform).spec()
        handle = platform.spawn(spec)
        assert wait_healthy(handle.endpoint, HEALTH_TIMEOUT) is not None
        members = container.host_pids()
        assert container.init_pid in members and len(members) > 2, members
        platform.close()
    finally:
        container.stop()
    assert container.traces() == []
    assert [pid for pid in members if Path(f"/proc/{pid}").exists()] == []
    assert wait_healthy(handle.endpoint, 0.5) is None


def test_restart_on_failure_after_sigkill(
    nodes: Nodes, systemd_container: SystemdContainer
) -> None:
    platform = nodes.platform()
    spec = nodes.spec()
    handle = platform.spawn(spec)
    assert wait_healthy(handle.endpoint, HEALTH_TIMEOUT) is not None
    assert handle.pid is not None
    killed = systemd_container.exec("kill", "-KILL", str(handle.pid))
    assert killed.returncode == 0, killed.stderr

    def restarted() -> dict[str, str] | None:
        props = show(systemd_container, handle.ref, "MainPID", "NRestarts", "SubState")
        return props if props["MainPID"] not in ("0", str(handle.pid)) else None

    props = wait_for(restarted, 20, what="a new MainPID")
    assert props is not None and props["NRestarts"] == "1"
    health = wait_healthy(handle.endpoint, HEALTH_TIMEOUT)
    assert health is not None and health["node_id"] == spec.node_id
    assert platform.status(spec.node_id).state == WorkloadState.RUNNING
    [adopted] = platform.list({LABEL_NODE_ID: spec.node_id})
    assert adopted.pid == int(props["MainPID"])
    platform.stop(spec.node_id, grace=5)


def test_resource_limits_reach_systemd(nodes: Nodes, systemd_container: SystemdContainer) -> None:
    platform = nodes.platform()
    handle = platform.spawn(nodes.spec(memory_mb=96, cpus=0.5))
    props = show(systemd_container, handle.ref, "MemoryMax", "CPUQuotaPerSecUSec")
    assert props == {"MemoryMax": str(96 * 1024 * 1024), "CPUQuotaPerSecUSec": "500ms"}
    platform.stop(handle.node_id, grace=5)


DUMP = (
    "import json, os, signal, sys; a = sys.argv[1:]; "
    "d = a[a.index('--data-dir') + 1]; "
    "p = os.path.join(d, 'seen.json'); "
    "open(p + '.tmp', 'w').write(json.dumps([a, dict(os.environ)])); os.replace(p + '.tmp', p); "
    "signal.pause()"
)


def test_arguments_and_environment_survive_the_unit_file(nodes: Nodes) -> None:
    """What a node receives is exactly its spec, whatever quoting the unit file needed."""
    args = ["a b", "%n", "$HOME", "${X}", 'q"', "back\\slash", "", ";", "l1\nl2", "\t", "é"]
    env = {"SPACE": "a b", "PCT": "100%", "DOLLAR": "$HOME", "QUOTE": '"q"', "BACK": "c:\\d\\",
           "NL": "one\ntwo", "PYTHONPATH": str(REPO_ROOT)}  # fmt: skip
    platform = nodes.platform()
    spec = nodes.spec(command=[sys.executable, "-c", DUMP, *args], env=env)
    handle = platform.spawn(spec)
    seen = Path(handle.meta["data_dir"]) / "seen.json"
    wait_for(seen.exists, 20, what=str(seen))
    argv, environ = json.loads(seen.read_text())
    assert argv == [*args, "--port", str(handle.port), "--data-dir", handle.meta["data_dir"],
                    "--node-id", spec.node_id]  # fmt: skip
    assert {k: environ.get(k) for k in env} == env
    platform.stop(spec.node_id, grace=5)


def test_stop_escalates_to_sigkill_after_grace(nodes: Nodes) -> None:
    stubborn = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.pause()"
    platform = nodes.platform()
    spec = nodes.spec(command=[sys.executable, "-c", stubborn])
    platform.spawn(spec)
    started = time.monotonic()
    platform.stop(spec.node_id, grace=1)
    elapsed = time.monotonic() - started
    assert 1 <= elapsed < 10, f"stop took {elapsed:.1f}s for a 1s grace"
    assert platform.status(spec.node_id).state == WorkloadState.MISSING


def test_crash_loop_ends_exited_with_its_code(nodes: Nodes) -> None:
    """Restart=on-failure gives up at systemd's start limit; status then says how it ended."""
    platform = nodes.platform()
    spec = nodes.spec(command=[sys.executable, "-c", "import time; time.sleep(0.5); exit(3)"])
    platform.spawn(spec)

    def exited() -> WorkloadStatus | None:
        status = platform.status(spec.node_id)
        return status if status.state == WorkloadState.EXITED else None

    status = wait_for(exited, 30, what="the start limit")
    assert status is not None and status.exit_code == 3, status
    assert platform.list({LABEL_NODE_ID: spec.node_id}) == []
    platform.stop(spec.node_id, grace=1)
    assert platform.status(spec.node_id).state == WorkloadState.MISSING


USER_MANAGER_DROP_IN = "/run/systemd/system/user@0.service.d/grid-test.conf"


@pytest.fixture
def user_manager(systemd_container: SystemdContainer) -> Iterator[tuple[str, ...]]:
    """Root's user manager (user@0.service); yields the command prefix that reaches it.

    A runtime drop-in drops PAM (whose helper outlives the manager) and bounds the stop:
    systemd in a container on a cgroup v1 host is not told when a cgroup empties and relies
    on SIGCHLD, so a unit whose last process is not its main one can hang in "deactivating".
    Single-process units such as grid-node are not affected.
    """
    environment = " ".join(f"{key}={value}" for key, value in USER_ENV.items())
    drop_in = f"[Service]\nPAMName=\nEnvironment={environment}\nTimeoutStopSec=2s\n"
    folder = str(Path(USER_MANAGER_DROP_IN).parent)
    script = f"mkdir -p {folder} && printf '{drop_in}' > {USER_MANAGER_DROP_IN}"
    for argv in (["sh", "-c", script], ["systemctl", "daemon-reload"],
                 ["systemctl", "start", "user@0.service"]):  # fmt: skip
        done = systemd_container.exec(*argv)
        assert done.returncode == 0, f"{argv}: {done.stderr}"
    try:
        yield systemd_container.enter(USER_ENV)
    finally:
        systemd_container.exec("systemctl", "stop", "user@0.service")
        systemd_container.exec("rm", "-rf", folder)
        systemd_container.exec("systemctl", "daemon-reload")


def test_user_scope(systemd_container: SystemdContainer, user_manager: tuple[str, ...]) -> None:
    """scope=user: `systemctl --user`, units in the container's ~/.config/systemd/user."""
    home = systemd_container.root / "rootfs" / "root"
    config = systemd_container.config(
        scope="user",
        unit_dir=str(home / ".config/systemd/user"),
        systemctl=(*user_manager, "systemctl"),
        journalctl=(*user_manager, "journalctl"),
    )
    made = Nodes(lambda: SystemdPlatform(config, AGENT_ID))
    try:
        platform = made.platform()
        spec = made.spec()
        handle = platform.spawn(spec)
        assert wait_healthy(handle.endpoint, HEALTH_TIMEOUT) is not None
        unit = systemd_container.exec(
            "systemctl", "--user", "show", "-p", "ActiveState", handle.ref, env=USER_ENV
        )
        assert unit.stdout.strip() == "ActiveState=active"
        assert [h.node_id for h in platform.list({LABEL_MANAGED: "true"})] == [spec.node_id]
        wait_for(lambda: "listening" in platform.logs(spec.node_id), 10, what="logs")
        platform.stop(spec.node_id, grace=5)
        assert platform.status(spec.node_id).state == WorkloadState.MISSING
    finally:
        made.cleanup()
    assert list(Path(config.unit_dir or "").glob("grid-node-*")) == []


def test_stop_of_an_unknown_node_deletes_nothing(
    nodes: Nodes, systemd_container: SystemdContainer
) -> None:
    """A folder no spawn marked and a unit file not written for that node survive a stop."""
    platform = nodes.platform()
    folder = systemd_container.data_root / "foreign-1"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "precious").write_text("keep")
    unit = systemd_container.unit_dir / platform.unit("foreign-2")
    unit.write_text("[Service]\nExecStart=/bin/true\n")  # someone else's unit, same name
    try:
        platform.stop("foreign-1", grace=1)
        platform.stop("foreign-2", grace=1)
        assert (folder / "data" / "precious").read_text() == "keep"
        assert unit.read_text() == "[Service]\nExecStart=/bin/true\n"
    finally:
        unit.unlink()
        (folder / "data" / "precious").unlink()
        (folder / "data").rmdir()
        folder.rmdir()
