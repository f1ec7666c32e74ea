"""`grid up`: a whole local grid on an embedded Redis, and nothing left after Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from tests.helpers import wait_for


def test_up_scale_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / ".grid"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRID_")}
    env.update(GRID_HOME=str(home), GRID_HTTP_PORT="0", PYTHONUNBUFFERED="1")
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "grid.cli.main", "up", "--agents", "2", "--nodes", "3"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # like a terminal: we signal the command, not our own group
    )
    started: list[int] = []
    try:
        wait_for(lambda: b"grid is up" in (tmp_path / "up.log").read_bytes(), 60, what="grid up")
        info = json.loads((home / "redis.json").read_text())

        def nodes() -> list[dict[str, object]] | None:
            # a second terminal in the same folder finds the grid with no configuration
            out = subprocess.run(
                [sys.executable, "-m", "grid.cli.main", "nodes", "--json"],
                env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            rows: list[dict[str, object]] = json.loads(out.stdout or "[]")
            return rows if len(rows) == 3 and all(r["status"] == "running" for r in rows) else None

        running = wait_for(nodes, 60, interval=0.2, what="3 running nodes")
        assert running is not None
        started = [info["pid"], *(p.pid for p in psutil.Process(up.pid).children(recursive=True))]
        started += [int(str(r["pid"])) for r in running]
        assert all(psutil.pid_exists(pid) for pid in started)

        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(timeout=90) == 0, (tmp_path / "up.log").read_text()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        log.close()
    text = (tmp_path / "up.log").read_text()
    assert "grid stopped" in text
    left = [
        pid
        for pid in started
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
    ]
    assert not left, f"left running after Ctrl-C: {left}"
    assert not (home / "redis.json").exists()
