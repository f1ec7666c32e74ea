"""Spawn → healthy on every platform adapter, in one run, through `create_platform`.

Each row spawns `--count` grid-nodes one after another (after `--warmup` unmeasured ones)
with `bench.common.measure_adapter`: spawn() returning, spawn() → first /health 200 with
`grid.workers.agent.health.wait_healthy` (the agent's own probe), and stop() (grace 5 s, the
agent's default).

- baseline: `python -c pass`, interpreter start to exit: the floor of any Python node;
- grid-node, no adapter: Popen → port on the ready pipe → /health 200, SIGTERM → exit 0
  (runs with `process`: the floor of the process adapter);
- process: ProcessPlatform with a temporary root;
- docker: DockerPlatform on the daemon that answers (scripts/docker-up.sh starts one; none
  is started here: the row says "skipped: no daemon"), test image `grid-test:local` of
  tests/e2e/docker_support.py, host network;
- kubernetes: KubernetesPlatform against the STAND-IN cluster of tests/e2e/k8s_standin.py
  (kmock's API emulator + a fake kubelet that runs each pod as a local process), NOT a real
  cluster: no scheduler, image pull, volume provisioning or pod network is measured;
- systemd: SystemdPlatform driving a real systemd (PID 1 in a container,
  tests/e2e/systemd_container.py: podman, or systemd-nspawn where the host's cgroups keep
  podman from running systemd), every systemctl through the container's command prefix
  (`podman exec CTR` or `nsenter -t INIT -a`); then the same loop run by a Python inside the
  container calling systemctl directly (what an agent on a systemd host pays), and the cost
  of one `PREFIX true`.

    .venv/bin/python bench/platforms.py [--count 10] [--warmup 1]
        [--platforms process,docker,kubernetes,systemd] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: bench.*, tests.*

from bench.common import (
    machine,
    measure_adapter,
    repeat,
    summary,
    timed,
    verdict,
)
from grid.core.naming import node_labels
from grid.platforms import PLATFORM_NAMES, create_platform
from grid.platforms.base import NodeHandle, NodeSpec, node_argv
from grid.platforms.process import READY_FD_ENV, read_ready_port

AGENT_ID = "bench-agent"
PORT_TIMEOUT = 30.0
# spawn → healthy p50 the product report (seed/COMPLETION_STATUS.md) claims, in ms
CLAIMS_MS = {"process": 50.0, "docker": 500.0, "kubernetes": 2000.0}
ADAPTER_KEYS = ("spawn_to_healthy_ms", "spawn_call_ms", "stop_call_ms")

Row = dict[str, Any]  # name, where, status (ok/skipped/failed), reason, measures, info


class Skip(Exception):
    """The row cannot run on this machine; the message says why."""


def node_command() -> list[str]:
    """The grid-node of this environment, by absolute path (else `python -m`)."""
    exe = Path(sys.executable).parent / "grid-node"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "grid.node.server"]


def spec_maker(command: list[str]) -> Callable[[int], NodeSpec]:
    """Specs as an agent builds them: a fresh node id, the standard labels, port 0."""

    def make(index: int) -> NodeSpec:
        node_id = f"bench-{index}-{secrets.token_hex(3)}"
        return NodeSpec(
            node_id=node_id,
            agent_id=AGENT_ID,
            pool="bench",
            command=command,
            labels=node_labels(node_id, AGENT_ID, "bench"),
        )

    return make


def adapter_row(name: str, where: str, result: dict[str, Any], returns_when: str) -> Row:
    labels = {
        "spawn_to_healthy_ms": "spawn() → /health 200",
        "spawn_call_ms": f"spawn() returns ({returns_when})",
        "stop_call_ms": "stop() returns",
    }
    measures = {key: {"label": labels[key], **result[key]} for key in ADAPTER_KEYS}
    return {"name": name, "where": where, "status": "ok", "reason": "", "measures": measures}


def measure_platform(
    name: str, config: dict[str, Any], command: list[str], count: int, warmup: int
) -> dict[str, Any]:
    """`measure_adapter` over an adapter built by `create_platform`, closed afterwards."""
    adapter = create_platform(name, AGENT_ID, config)
    try:
        return measure_adapter(adapter, spec_maker(command), count, warmup)
    finally:
        adapter.close()


# ---- baseline and the adapter-less node ------------------------------------------------


def baseline_row(count: int, warmup: int) -> Row:
    def run() -> None:
        subprocess.run([sys.executable, "-c", "pass"], check=True)

    seconds = repeat(lambda: timed(run), count, warmup)
    return {
        "name": "baseline",
        "where": "`python -c pass`, this interpreter, no Grid code",
        "status": "ok",
        "reason": "",
        "measures": {"run_ms": {"label": "start → exit", **summary(seconds)}},
    }


class RawNode:
    """grid-node started with a bare Popen, the way ProcessPlatform does minus its bookkeeping."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[subprocess.Popen[bytes], str]] = {}

    def spawn(self, spec: NodeSpec) -> NodeHandle:
        data_dir = tempfile.mkdtemp(prefix="grid-bench-raw-")
        read_fd, write_fd = os.pipe()
        try:
            proc = subprocess.Popen(
                node_argv(spec.command, spec.node_id, 0, data_dir),
                env={**os.environ, READY_FD_ENV: str(write_fd)},
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
            self.nodes[spec.node_id] = (proc, data_dir)
            os.close(write_fd)
            write_fd = -1
            port = read_ready_port(read_fd, proc, PORT_TIMEOUT)
        finally:
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
        return NodeHandle(
            node_id=spec.node_id,
            platform="raw",
            ref=str(proc.pid),
            endpoint=f"http://127.0.0.1:{port}",
            port=port,
            started_at=time.time(),
            pid=proc.pid,
        )

    def stop(self, node_id: str, grace: float) -> None:
        """SIGTERM, wait up to `grace`; the node must exit 0 within it."""
        proc, data_dir = self.nodes.pop(node_id, (None, ""))
        if proc is None:
            return
        try:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"grid-node did not exit within {grace:g}s of SIGTERM") from None
            if code != 0:
                raise RuntimeError(f"grid-node exited {code} on SIGTERM")
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)

    def logs(self, node_id: str, lines: int = 100) -> str:
        return ""  # stderr goes to the bench's own


def raw_row(count: int, warmup: int) -> Row:
    result = measure_adapter(RawNode(), spec_maker(node_command()), count, warmup)
    row = adapter_row("grid-node, no adapter", "bare Popen on the host", result, "")
    labels = ("Popen → /health 200", "Popen → port on the ready pipe", "SIGTERM → exit 0")
    for key, label in zip(ADAPTER_KEYS, labels, strict=True):
        row["measures"][key]["label"] = label
    return row


# ---- the four adapters -----------------------------------------------------------------


def process_row(count: int, warmup: int) -> Row:
    with tempfile.TemporaryDirectory(prefix="grid-bench-process-") as root:
        result = measure_platform("process", {"root": root}, node_command(), count, warmup)
    return adapter_row(
        "process", "ProcessPlatform, temporary root", result, "port on the ready pipe"
    )


def docker_row(count: int, warmup: int) -> Row:
    try:
        from tests.e2e.docker_support import (  # noqa: PLC0415 - needs the docker extra
            TEST_IMAGE,
            docker_client,
            docker_config,
            ensure_test_image,
        )
    except ModuleNotFoundError as exc:
        raise Skip(f"missing {exc.name}: pip install 'grid[docker]'") from None
    client = docker_client()
    if client is None:
        raise Skip("no daemon (scripts/docker-up.sh starts one)")
    try:
        problem = ensure_test_image(client)
        info = client.info()
    finally:
        client.close()
    if problem:
        raise Skip(problem)
    config = docker_config().model_dump(exclude_unset=True)
    result = measure_platform("docker", config, ["grid-node"], count, warmup)
    where = (
        f"DockerPlatform, dockerd {info.get('ServerVersion')} ({info.get('Driver')}), "
        f"image {TEST_IMAGE} (busybox + bind-mounted venv), host network"
    )
    return adapter_row("docker", where, result, "container started")


def kubernetes_row(count: int, warmup: int) -> Row:
    try:
        from tests.e2e.k8s_standin import (  # noqa: PLC0415 - needs kubernetes + kmock
            STANDIN_VERSION,
            KubeStandin,
            Program,
        )
    except ModuleNotFoundError as exc:
        raise Skip(f"missing {exc.name}: pip install 'grid[kubernetes]' kmock") from None
    with (
        tempfile.TemporaryDirectory(prefix="grid-bench-k8s-") as workdir,
        KubeStandin(Path(workdir), programs={"grid-node": Program(node_command())}) as standin,
    ):
        config = {"kubeconfig": str(standin.kubeconfig), "start_timeout": 60.0}
        result = measure_platform("kubernetes", config, ["grid-node"], count, warmup)
    where = (
        f"KubernetesPlatform against the STAND-IN ({STANDIN_VERSION}: kmock API emulator + "
        "fake kubelet running pods as local processes), NOT a real cluster"
    )
    return adapter_row("kubernetes (stand-in)", where, result, "pod Running with an IP")


def systemd_inside(data_root: str, count: int, warmup: int) -> dict[str, Any]:
    """The loop as run by a Python inside the container: systemctl called directly."""
    config = {"unit_dir": "/etc/systemd/system", "data_root": data_root}
    return measure_platform("systemd", config, node_command(), count, warmup)


def systemd_rows(count: int, warmup: int) -> list[Row]:
    from tests.e2e.systemd_container import (  # noqa: PLC0415 - only for the systemd rows
        container_missing,
        start_systemd_container,
    )

    missing = container_missing()
    if missing:
        raise Skip(missing)
    with tempfile.TemporaryDirectory(prefix="grid-bench-systemd-") as tmp:
        container = start_systemd_container(Path(tmp) / "ctr")
        try:
            version = container.exec("systemctl", "--version").stdout.split("\n")[0]
            boundary = container.boundary

            def exec_true() -> None:
                if container.exec("true").returncode != 0:
                    raise RuntimeError(f"{boundary} true failed")

            exec_cost = summary(repeat(lambda: timed(exec_true), count, warmup))
            config = container.config().model_dump(exclude_unset=True)
            outside = measure_platform("systemd", config, node_command(), count, warmup)
            inner = container.exec(
                sys.executable, str(Path(__file__).resolve()),
                "--systemd-inside", str(container.data_root),
                "--count", str(count), "--warmup", str(warmup),
                timeout=600,
            )  # fmt: skip
            if inner.returncode != 0:
                raise RuntimeError(f"in-container run failed: {inner.stderr.strip()[-500:]}")
            inside = json.loads(inner.stdout)
            boot_ms = round(container.boot_seconds * 1000, 1)
            backend = container.backend
        finally:
            container.stop()
    where = f"SystemdPlatform, {version} as PID 1 in {backend} (booted in {boot_ms:g} ms)"
    via_exec = adapter_row(
        f"systemd ({boundary.split()[0]})",
        f"{where}; every systemctl through `{boundary}`",
        outside,
        "unit active (running)",
    )
    via_exec["measures"]["exec_ms"] = {
        "label": f"one `{boundary} true` (boundary cost)",
        **exec_cost,
    }
    direct = adapter_row(
        "systemd (in container)",
        "the same loop run inside the container, systemctl called directly",
        inside,
        "unit active (running)",
    )
    return [via_exec, direct]


# ---- the run ---------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


@contextmanager
def row_guard(rows: list[Row], name: str) -> Iterator[None]:
    """Record a skipped or failed row instead of aborting the run."""
    progress(name)
    try:
        yield
    except Skip as exc:
        rows.append({"name": name, "status": "skipped", "reason": str(exc), "measures": {}})
    except Exception as exc:  # noqa: BLE001 - one broken platform must not hide the others
        message = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        rows.append({"name": name, "status": "failed", "reason": message, "measures": {}})


def run(platforms: list[str], count: int, warmup: int) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": machine(), "count": count, "warmup": warmup}
    rows: list[Row] = []
    with row_guard(rows, "baseline"):
        rows.append(baseline_row(count, warmup))
    builders: dict[str, Callable[[int, int], list[Row]]] = {
        "process": lambda c, w: [raw_row(c, w), process_row(c, w)],
        "docker": lambda c, w: [docker_row(c, w)],
        "kubernetes": lambda c, w: [kubernetes_row(c, w)],
        "systemd": systemd_rows,
    }
    for name in platforms:
        with row_guard(rows, name):
            rows.extend(builders[name](count, warmup))
    result["rows"] = rows
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["verdict"] = claims_verdict(rows, platforms)
    return result


def claims_verdict(rows: list[Row], platforms: list[str]) -> dict[str, dict[str, Any]]:
    """The product report's spawn claims against the measured spawn → healthy p50."""
    checks: dict[str, tuple[float | None, float]] = {}
    for name, claim in CLAIMS_MS.items():
        if name not in platforms:
            continue
        row = next(r for r in rows if r["name"].split(" ")[0] == name)
        measured = row["measures"].get("spawn_to_healthy_ms", {}).get("p50")
        where = " (stand-in)" if name == "kubernetes" else ""
        checks[f"{name}{where} spawn-to-healthy p50 <= {claim:g} ms (product claim)"] = (
            measured,
            claim,
        )
    return verdict(checks)


def fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Machine: {m['nproc']} × {m['cpu_model']}, {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}, Python {m['python']}",
        f"Date: {m['date']}; load average {m['loadavg_at_start']} at start, "
        f"{m['loadavg_at_end']} at end",
        f"Command: `{m['command']}` ({result['count']} measured spawns per row after "
        f"{result['warmup']} warm-up; ms, nearest rank: p99 = max below 100 samples)",
        "",
        "| row | measure | n | p50 | p90 | p99 | max |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    notes: list[str] = []
    for row in result["rows"]:
        if row["status"] != "ok":
            lines.append(f"| {row['name']} | {row['status']}: {row['reason']} | | | | | |")
            continue
        notes.append(f"- **{row['name']}**: {row['where']}")
        for s in row["measures"].values():
            figures = " | ".join(fmt(s[k]) for k in ("p50", "p90", "p99", "max"))
            lines.append(f"| {row['name']} | {s['label']} | {s['n']} | {figures} |")
    lines += ["", *notes, "", "| product claim | measured p50 | verdict |", "|---|--:|---|"]
    for name, v in result["verdict"].items():
        met = {True: "met", False: "missed", None: "not measured"}[v["met"]]
        value = "—" if v["value"] is None else f"{fmt(v['value'])} ms"
        lines.append(f"| {name} | {value} | {met} |")
    return "\n".join(lines)


def parse_platforms(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PLATFORM_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown platform(s) {', '.join(unknown) or '(none)'}; "
            f"choose among {','.join(PLATFORM_NAMES)}"
        )
    return list(dict.fromkeys(names))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=10, help="measured spawns per row")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured spawns first")
    parser.add_argument(
        "--platforms",
        type=parse_platforms,
        default=list(PLATFORM_NAMES),
        help=f"comma-separated, among {','.join(PLATFORM_NAMES)} (default: all)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--systemd-inside", metavar="DATA_ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count < 1 or args.warmup < 0:
        parser.error("--count must be >= 1 and --warmup >= 0")
    if args.systemd_inside:  # the in-container half of the systemd rows
        print(json.dumps(systemd_inside(args.systemd_inside, args.count, args.warmup)))
        return 0
    result = run(args.platforms, args.count, args.warmup)
    print(json.dumps(result, indent=2) if args.json else markdown(result))
    return 1 if any(row["status"] == "failed" for row in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
