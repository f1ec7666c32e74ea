"""Run every benchmark in bench/ that has a --json flag, each in its own subprocess.

A benchmark is a bench/*.py script whose source declares a `--json` option (core.py,
chaos.py, autoscaler_eval.py, platforms.py, ...); those not present are skipped. Each runs
with its defaults plus `--json`; its progress (stderr) streams through, its JSON is printed,
and at the end one line per target it reports under "verdict" (`{name: {value, target,
met}}`, see bench/common.py) says met or MISSED. Exit 1 when a benchmark fails (non-zero
exit, no JSON); a missed target is a result, not a failure.

    .venv/bin/python bench/run_all.py [--only core,platforms] [--timeout 3600]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
EXPECTED = ("core", "chaos", "autoscaler_eval", "platforms")  # run first, in this order
NOT_BENCHMARKS = {"__init__", "common", "run_all"}


def discover() -> list[str]:
    """Names of the bench scripts present that take --json, EXPECTED ones first."""
    found = sorted(
        path.stem
        for path in BENCH.glob("*.py")
        if path.stem not in NOT_BENCHMARKS and '"--json"' in path.read_text()
    )
    return [n for n in EXPECTED if n in found] + [n for n in found if n not in EXPECTED]


def run_one(name: str, timeout: float) -> dict[str, Any]:
    """Run bench/<name>.py --json; its exit code, duration, output and parsed JSON."""
    argv = [sys.executable, str(BENCH / f"{name}.py"), "--json"]
    print(f"=== {name}: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            argv, stdout=subprocess.PIPE, text=True, timeout=timeout, check=False, cwd=BENCH.parent
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return {"name": name, "code": None, "seconds": timeout, "stdout": out, "data": None}
    data: Any = None
    with contextlib.suppress(ValueError):
        data = json.loads(proc.stdout)
    return {
        "name": name,
        "code": proc.returncode,
        "seconds": round(time.monotonic() - start, 1),
        "stdout": proc.stdout,
        "data": data,
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    """One line on the run, then one per target."""
    name, code, data = result["name"], result["code"], result["data"]
    if code is None:
        return [f"FAILED {name}: timed out after {result['seconds']:g} s"]
    if not isinstance(data, dict):
        return [f"FAILED {name}: exit {code}, no JSON on stdout"]
    state = "ok" if code == 0 else f"FAILED (exit {code})"
    lines = [f"{state} {name} ({result['seconds']:g} s)"]
    targets = data.get("verdict")
    if not isinstance(targets, dict) or not targets:
        return [*lines, f"  -      {name}: no targets reported"]
    for target, v in targets.items():
        met = v.get("met") if isinstance(v, dict) else v
        value = v.get("value") if isinstance(v, dict) else None
        word = {True: "met   ", False: "MISSED", None: "n/a   "}.get(met, "n/a   ")
        lines.append(f"  {word} {name}: {target}: {value}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", help="comma-separated bench names (default: all found)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark")
    args = parser.parse_args()
    present = discover()
    names = present
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in present]
        if unknown:
            parser.error(f"no benchmark {', '.join(unknown)}; found: {', '.join(present)}")
    results = []
    for name in names:
        result = run_one(name, args.timeout)
        results.append(result)
        print(f"=== {name} (exit {result['code']}, {result['seconds']:g} s)")
        print(result["stdout"].rstrip())
    print("\n=== summary")
    for name in EXPECTED:
        if name not in present:
            exists = (BENCH / f"{name}.py").exists()
            why = "has no --json flag" if exists else "not present"
            print(f"skipped {name}: bench/{name}.py {why}")
    failed = False
    for result in results:
        lines = summary_lines(result)
        failed = failed or lines[0].startswith("FAILED")
        print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
