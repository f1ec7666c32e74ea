"""Unit files written by the systemd adapter: their text, and systemd's own verdict on them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grid.core.errors import SpawnError
from grid.core.naming import node_labels
from grid.platforms.base import NodeSpec, WorkloadState
from grid.platforms.systemd import (
    UnitParams,
    parse_show,
    read_unit_meta,
    render_unit,
    status_from_show,
    unit_name,
)
from tests.helpers import require

PARAMS = UnitParams(
    port=8123,
    working_dir="/var/lib/grid/nodes/n1",
    data_dir="/var/lib/grid/nodes/n1/data",
    endpoint="http://127.0.0.1:8123",
)


def make_spec(**overrides: object) -> NodeSpec:
    values: dict[str, object] = {
        "node_id": "n1",
        "agent_id": "a1",
        "pool": "web",
        "command": [sys.executable, "-m", "grid.node.server"],
    }
    values.update(overrides)
    return NodeSpec(**values)  # type: ignore[arg-type]


def lines_of(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


def test_basic_unit() -> None:
    text = render_unit(make_spec(), PARAMS)
    assert text.splitlines()[0] == "[Unit]"
    assert lines_of(text, "Description") == ["Grid node n1 (pool web)"]
    assert lines_of(text, "Type") == ["exec"]
    assert lines_of(text, "ExecStart") == [
        f'"{sys.executable}" "-m" "grid.node.server" "--port" "8123" '
        '"--data-dir" "/var/lib/grid/nodes/n1/data" "--node-id" "n1"'
    ]
    assert lines_of(text, "WorkingDirectory") == ["/var/lib/grid/nodes/n1"]
    assert lines_of(text, "Restart") == ["on-failure"]
    assert lines_of(text, "RestartSec") == ["1s"]
    assert lines_of(text, "KillSignal") == ["SIGTERM"]
    assert lines_of(text, "TimeoutStopSec") == ["10s"]
    assert lines_of(text, "WantedBy") == ["multi-user.target"]
    for key in ("Environment", "MemoryMax", "CPUQuota"):
        assert lines_of(text, key) == [], f"{key} without a reason"


@pytest.mark.parametrize(
    ("memory_mb", "cpus", "memory_max", "cpu_quota"),
    [
        (512, None, ["512M"], []),
        (None, 0.25, [], ["25%"]),
        (1024, 2.0, ["1024M"], ["200%"]),
        (64, 0.333, ["64M"], ["33.3%"]),
    ],
)
def test_resources(
    memory_mb: int | None, cpus: float | None, memory_max: list[str], cpu_quota: list[str]
) -> None:
    text = render_unit(make_spec(memory_mb=memory_mb, cpus=cpus), PARAMS)
    assert lines_of(text, "MemoryMax") == memory_max
    assert lines_of(text, "CPUQuota") == cpu_quota


def test_time_spans_are_never_zero() -> None:
    params = UnitParams(**{**PARAMS.__dict__, "restart_sec": 0.25, "stop_timeout": 0})
    text = render_unit(make_spec(), params)
    assert lines_of(text, "RestartSec") == ["250ms"]
    assert lines_of(text, "TimeoutStopSec") == ["1ms"]  # 0 would mean "wait forever"


def test_environment_is_quoted_and_escaped() -> None:
    env = {"PLAIN": "x", "SPACE": "a b", "QUOTE": 'say "hi"', "BACK": "c:\\dir\\", "PCT": "100%",
           "DOLLAR": "$HOME", "NL": "one\ntwo", "TAB": "\t"}  # fmt: skip
    text = render_unit(make_spec(env=env), PARAMS)
    assert lines_of(text, "Environment") == [
        '"BACK=c:\\\\dir\\\\" "DOLLAR=$HOME" "NL=one\\ntwo" "PCT=100%%" "PLAIN=x" '
        '"QUOTE=say \\"hi\\"" "SPACE=a b" "TAB=\\x09"'
    ]


def test_exec_arguments_are_quoted_and_escaped() -> None:
    spec = make_spec(command=["/bin/node", "a b", "%n", "$HOME", "${X}", 'q"', "\\", "", ";"])
    text = render_unit(spec, PARAMS)
    (exec_start,) = lines_of(text, "ExecStart")
    assert exec_start.startswith(
        '"/bin/node" "a b" "%%n" "$$HOME" "$${X}" "q\\"" "\\\\" "" ";" "--port" "8123"'
    )


def test_placeholders_replace_the_standard_flags() -> None:
    spec = make_spec(command=["/bin/kv", "--listen=127.0.0.1:{port}", "--dir", "{data_dir}"])
    (exec_start,) = lines_of(render_unit(spec, PARAMS), "ExecStart")
    assert exec_start == '"/bin/kv" "--listen=127.0.0.1:8123" "--dir" "/var/lib/grid/nodes/n1/data"'


def test_meta_round_trips_labels_and_endpoint() -> None:
    spec = make_spec(labels={"team": "storage", "odd": '50% "off"\n'})
    meta = read_unit_meta(render_unit(spec, PARAMS))
    assert meta is not None
    assert meta.labels == {**node_labels("n1", "a1", "web"), **spec.labels}
    assert (meta.node_id, meta.agent_id, meta.pool) == ("n1", "a1", "web")
    assert (meta.port, meta.endpoint, meta.data_dir) == (8123, PARAMS.endpoint, PARAMS.data_dir)
    assert read_unit_meta("[Unit]\nDescription=not ours\n") is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"command": []}, "empty"),
        ({"command": ["-/bin/node"]}, "may not start"),
        ({"env": {"BAD-KEY": "x"}}, "BAD-KEY"),
        ({"env": {"K": "nul\0"}}, "NUL"),
    ],
)
def test_unrepresentable_specs_are_spawn_errors(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(SpawnError, match=message):
        render_unit(make_spec(**overrides), PARAMS)


def test_a_unit_needs_a_fixed_port() -> None:
    with pytest.raises(SpawnError, match="fixed port"):
        render_unit(make_spec(), UnitParams(**{**PARAMS.__dict__, "port": 0}))


def test_parse_show_splits_units() -> None:
    out = "Id=a.service\nActiveState=active\n\nId=b.service\nActiveState=failed\nX=1=2\n"
    assert parse_show(out) == [
        {"Id": "a.service", "ActiveState": "active"},
        {"Id": "b.service", "ActiveState": "failed", "X": "1=2"},
    ]


@pytest.mark.parametrize(
    ("props", "state", "exit_code"),
    [
        ({"LoadState": "loaded", "ActiveState": "active", "SubState": "running"},
         WorkloadState.RUNNING, None),
        ({"LoadState": "loaded", "ActiveState": "activating", "SubState": "auto-restart",
          "ExecMainCode": "2", "ExecMainStatus": "9"}, WorkloadState.STARTING, None),
        ({"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed",
          "ExecMainCode": "1", "ExecMainStatus": "3", "Result": "exit-code"},
         WorkloadState.EXITED, 3),
        ({"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed",
          "ExecMainCode": "2", "ExecMainStatus": "9", "Result": "signal"},
         WorkloadState.EXITED, -9),
        ({"LoadState": "not-found", "ActiveState": "inactive", "SubState": "dead"},
         WorkloadState.MISSING, None),
    ],
)  # fmt: skip
def test_status_from_show(
    props: dict[str, str], state: WorkloadState, exit_code: int | None
) -> None:
    status = status_from_show(props)
    assert (status.state, status.exit_code) == (state, exit_code)


# ---- systemd's own verdict -------------------------------------------------------------

VERIFY_SPECS = {
    "plain": make_spec(),
    "resources": make_spec(memory_mb=256, cpus=0.5),
    "fractional-cpu": make_spec(cpus=1.337),
    "env": make_spec(env={"A": "x y", "B": 'q"\\', "C": "50%", "D": "$HOME", "E": "l1\nl2"}),
    "odd-args": make_spec(command=[sys.executable, "-c", "pass", "%n $X ;", "", "\t\\"]),
    "placeholders": make_spec(command=[sys.executable, "{data_dir}/x", "--p={port}"]),
    "labels": make_spec(labels={"team": "50% off", "note": "a\nb"}),
}


def verify(path: Path) -> tuple[int, list[str]]:
    """systemd-analyze verify: its exit code and the lines it printed about this file."""
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=path.parent,
    )
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if path.name in line]
    return proc.returncode, ours


@pytest.fixture
def systemd_analyze() -> None:
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze is not installed")


@pytest.mark.usefixtures("systemd_analyze")
@pytest.mark.parametrize("case", sorted(VERIFY_SPECS))
def test_systemd_analyze_verify_accepts(case: str, tmp_path: Path) -> None:
    spec = VERIFY_SPECS[case]
    params = UnitParams(**{**PARAMS.__dict__, "working_dir": str(tmp_path), "stop_timeout": 2.5})
    path = tmp_path / unit_name("grid-node-", spec.node_id)
    path.write_text(render_unit(spec, params))
    code, complaints = verify(path)
    assert (code, complaints) == (0, [])


@pytest.mark.usefixtures("systemd_analyze")
def test_systemd_analyze_verify_would_complain(tmp_path: Path) -> None:
    """The check above can fail: a broken value in the same kind of unit is reported."""
    params = UnitParams(**{**PARAMS.__dict__, "working_dir": str(tmp_path)})
    path = tmp_path / unit_name("grid-node-", "n1")
    path.write_text(render_unit(make_spec(memory_mb=1), params).replace("1M", "lots"))
    _, complaints = verify(path)
    assert any("MemoryMax" in line or "memory limit" in line for line in complaints), complaints
