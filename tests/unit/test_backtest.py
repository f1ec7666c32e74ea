"""Backtests in simulated time and the Kubernetes HPA baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from grid.autoscaler.backtest import (
    SimConfig,
    Trace,
    default_sim_config,
    format_table,
    load_trace,
    plot,
    run_hpa,
    run_nomad,
    run_oracle,
    run_policy,
)
from grid.autoscaler.hpa import HPA
from grid.autoscaler.policy import PoolPolicy, load_policy_file
from grid.autoscaler.sweep import envelope, interpolate, plot_sweep, sweep
from grid.cli.main import main
from grid.core.errors import ConfigError

T0 = 1_767_571_200.0


def trace(*levels: tuple[int, float], name: str = "t") -> Trace:
    """Minutes at each load level, one point a minute."""
    points, minute = [], 0
    for minutes, load in levels:
        for _ in range(minutes):
            points.append((T0 + 60 * minute, load))
            minute += 1
    return Trace(name, {"": points})


def policy(**fields: Any) -> PoolPolicy:
    body: dict[str, Any] = {
        "pool": "web", "min": 1, "max": 40, "evaluation_interval": "15s",
        "cooldown": {"scale_up": "30s", "scale_down": "2m"},
        "checks": [{"name": "rps", "strategy": "target_value", "metric": "request_rate",
                    "target": 100, "window": "30s"}],
        **fields,
    }  # fmt: skip
    return PoolPolicy.model_validate(body)


# ---- traces ------------------------------------------------------------------------------


def test_load_trace_formats(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text(
        "timestamp,value,metric\n"
        "2026-01-05T00:01:00Z,20,cpu_percent\n"
        "1767571200,100,request_rate\n"
        "# a comment\n\n"
        "2026-01-05T00:00:00+00:00,10,cpu_percent\n"
    )
    loaded = load_trace(path)
    assert loaded.name == "mixed"
    assert loaded.points == {
        "cpu_percent": [(T0, 10.0), (T0 + 60, 20.0)],
        "request_rate": [(T0, 100.0)],
    }
    assert (loaded.start, loaded.end) == (T0, T0 + 120)


@pytest.mark.parametrize(("text", "where"), [("ts,value\n1,x\n", ":2:"), ("", "no data rows")])
def test_load_trace_errors(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=where):
        load_trace(path)


# ---- simulation --------------------------------------------------------------------------


def test_flat_load_costs_exactly_its_nodes() -> None:
    report = run_policy(policy(), trace((60, 400)))
    assert report.node_minutes == pytest.approx(4 * 60, abs=1)
    assert report.minutes_under_capacity == 0
    assert report.scale_actions == 0 and report.direction_changes == 0


def test_a_step_up_waits_for_spin_up_and_counts_minutes_under_capacity() -> None:
    config = SimConfig(capacity=100, metric="request_rate", spin_up=120.0)
    report = run_policy(policy(), trace((10, 400), (20, 800)), config)
    (when, before, after, reason), *_ = report.actions
    assert before == 4 and after > before
    assert when >= T0 + 600
    # under target from the step until the new nodes are ready: spin-up plus detection
    assert 2.0 <= report.minutes_under_capacity <= 3.5
    assert report.max_nodes == 8
    assert "rps" in reason


def test_direction_changes_count_reversals() -> None:
    report = run_policy(policy(), trace((10, 400), (10, 800), (10, 400), (10, 800)))
    directions = [1 if b > a else -1 for _, a, b, _ in report.actions]
    expected = sum(1 for x, y in zip(directions, directions[1:], strict=False) if x != y)
    assert report.direction_changes == expected >= 2


def test_default_config_comes_from_the_policy() -> None:
    assert default_sim_config(policy()) == SimConfig(capacity=100, metric="request_rate")
    threshold = policy(checks=[{"strategy": "threshold", "metric": "cpu_percent", "upper": 75}])
    assert default_sim_config(threshold, step=30.0).capacity == 75
    with pytest.raises(ConfigError, match="no capacity"):
        default_sim_config(policy(checks=[]))


def test_oracle_is_never_under_target() -> None:
    report = run_oracle(policy(), trace((10, 400), (10, 750)))
    assert report.minutes_under_capacity == 0
    assert report.node_minutes == pytest.approx(4 * 10 + 8 * 10, abs=1)


# ---- the HPA baseline --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "sizes"),
    [
        # (seconds, current, per-pod value): 200 against 100 doubles ...
        ([(0, 4, 200)], [8]),
        # ... but at most +100 % or +4 pods per 15 s: 2 -> 6 (4 pods beats 100 %), then more
        ([(0, 2, 1000), (5, 6, 333)], [6, 6]),
        ([(0, 2, 1000), (15, 6, 333)], [6, 12]),
        # within tolerance: nothing
        ([(0, 10, 108)], [10]),
        # scale-down waits for 5 minutes of lower recommendations
        ([(0, 10, 100), (60, 10, 50), (299, 10, 50), (301, 10, 50)], [10, 10, 10, 5]),
        # min/max clamp
        ([(0, 10, 10)], [2]),
        ([(0, 10, 1000)], [20]),
    ],
)
def test_hpa(steps: list[tuple[float, int, float]], sizes: list[int]) -> None:
    hpa = HPA(target=100, min_replicas=2, max_replicas=20)
    assert [hpa.recommend(T0 + t, current, value) for t, current, value in steps] == sizes


def test_hpa_baseline_on_a_step() -> None:
    report = run_hpa(policy(), trace((10, 400), (20, 1600), (20, 400)))
    assert report.max_nodes == 16
    # the scale-down comes only after the 5-minute stabilisation window
    down = [t for t, a, b, _ in report.actions if b < a]
    assert down and 270 <= down[0] - (T0 + 30 * 60) <= 330


def test_the_engine_configured_like_the_hpa_behaves_like_it() -> None:
    """Tolerance 0.1, no scale-up cooldown, 5-minute scale-down stabilisation."""
    like_hpa = policy(
        tolerance=0.1,
        cooldown={"scale_up": "0s", "scale_down": "5m"},
        checks=[{"name": "rps", "strategy": "target_value", "metric": "request_rate",
                 "target": 100, "window": "1m"}],
    )  # fmt: skip
    load = trace((20, 400), (30, 1000), (30, 600), (20, 300))
    ours, theirs = run_policy(like_hpa, load), run_hpa(like_hpa, load)
    assert ours.node_minutes == pytest.approx(theirs.node_minutes, rel=0.03)
    assert ours.minutes_under_capacity == pytest.approx(theirs.minutes_under_capacity, abs=3)


# ---- output ------------------------------------------------------------------------------


def test_table_and_plot(tmp_path: Path) -> None:
    load = trace((20, 400), (20, 900))
    reports = [run_policy(policy(), load), run_hpa(policy(), load)]
    table = format_table(reports)
    assert table.splitlines()[0].startswith("| trace | spin-up | controller | node-minutes")
    assert "| t | 60s | web |" in table and "| t | 60s | hpa avg60 100% |" in table
    out = tmp_path / "plot.png"
    plot(reports, out, capacity=100)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "timeline" not in reports[0].to_dict()


def backtest_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`grid policy backtest ...` through grid.cli.main.main: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(["policy", "backtest", *args])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def step_csv(tmp_path: Path) -> Path:
    csv = tmp_path / "step.csv"
    csv.write_text("".join(f"{T0 + 60 * m},{400 if m < 20 else 900}\n" for m in range(40)))
    return csv


def test_backtest_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policies = Path(__file__).parents[2] / "policies" / "requests-target.yaml"
    code, out, err = backtest_cli(
        capsys, str(policies), "--trace", str(step_csv(tmp_path)), "--oracle", "--nomad",
        "--step", "15s", "--spin-up", "10s", "--spin-up", "60s",
    )  # fmt: skip
    assert code == 0, err
    for spin_up in ("10s", "60s"):
        for who in ("api", "hpa instant 100%", "hpa avg60 100%", "nomad 100%"):
            assert f"| step | {spin_up} | {who} |" in out
    assert "| step | 0s | oracle |" in out


def test_backtest_refuses_a_zero_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policies = Path(__file__).parents[2] / "policies" / "requests-target.yaml"
    csv = str(step_csv(tmp_path))
    code, out, err = backtest_cli(capsys, str(policies), "--trace", csv, "--step", "0s")
    assert (code, out) == (2, "")
    assert err.splitlines() == ["grid: --step must be more than 0s (got 0s)"]


# ---- the live grid's behaviour, simulated -------------------------------------------------

POLICIES = Path(__file__).parents[2] / "policies"


def per_second(*levels: tuple[int, float], name: str = "s") -> Trace:
    """Seconds at each load level, one row a second."""
    points, second = [], 0
    for seconds, load in levels:
        for _ in range(seconds):
            points.append((T0 + second, load))
            second += 1
    return Trace(name, {"": points})


def test_the_default_policy_follows_a_step_within_one_evaluation() -> None:
    [default] = load_policy_file(POLICIES / "default.yaml")
    step_at = 1203.0  # not on an evaluation: the first one after it sees a partial interval
    load = per_second((int(step_at), 270.0), (600, 1350.0))
    report = run_policy(default, load, default_sim_config(default, spin_up=10.0))
    actions = [a for a in report.actions if a[0] > T0 + 60]
    (when, before, after, reason), *_ = actions
    assert when - (T0 + step_at) <= default.evaluation_interval
    # The first evaluation saw 7 s of the step in its 10 s: ceil((3 x 270 + 7 x 1350) / 10 / 90)
    assert (before, after) == (3, 12) and "requests" in reason
    full = next(t for t, _, n, _ in actions if n >= 15)  # 1350 / 90: the whole step
    assert full - (T0 + step_at) <= 2 * default.evaluation_interval
    assert all(b > a for t, a, b, _ in actions if t < full)  # never a step back on the way


def test_a_dry_run_policy_is_simulated_as_not_acting() -> None:
    load = trace((10, 400), (20, 1600))
    acting, dry = run_policy(policy(), load), run_policy(policy(dry_run=True), load)
    assert acting.scale_actions > 0
    assert (dry.scale_actions, dry.max_nodes) == (0, 4)
    assert dry.minutes_under_capacity > acting.minutes_under_capacity


def test_results_do_not_depend_on_the_step() -> None:
    """Samples average their step, so a per-second trace gives the same result at 1 s and 5 s
    (it gave 852 vs 958 node-minutes at 15 s and 1 s when one row was read per step)."""
    rng = [400 + (900 if 600 <= s % 1800 < 900 else 0) + (s * 7919 % 97) for s in range(5400)]
    load = Trace("flash", {"": [(T0 + s, float(v)) for s, v in enumerate(rng)]})
    fine = run_hpa(policy(), load, default_sim_config(policy(), step=1.0), "instant")
    coarse = run_hpa(policy(), load, default_sim_config(policy(), step=5.0), "instant")
    assert coarse.node_minutes == pytest.approx(fine.node_minutes, rel=0.02)
    assert coarse.minutes_under_capacity == pytest.approx(fine.minutes_under_capacity, rel=0.1)


def test_the_hpa_metric_variants_differ_in_reaction() -> None:
    load = per_second((300, 400.0), (600, 1200.0))
    instant = run_hpa(policy(), load, metric="instant")
    avg60 = run_hpa(policy(), load, metric="avg60")
    assert instant.actions[0][0] <= avg60.actions[0][0]
    assert instant.minutes_under_capacity < avg60.minutes_under_capacity


def test_nomad_waits_its_cooldown_after_every_action() -> None:
    report = run_nomad(policy(), trace((10, 400), (10, 900), (10, 1500), (20, 400)))
    times = [t for t, *_ in report.actions]
    assert len(times) >= 2 and all(b - a >= 300 for a, b in zip(times, times[1:], strict=False))


# ---- the cost curve and the verdict ------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "curve"),
    [
        ([(10, 5), (12, 3), (11, 6), (15, 0)], [(10, 5), (12, 3), (15, 0)]),
        ([(10, 5), (10, 4), (20, 4)], [(10, 4)]),  # a costlier point no better: off the curve
    ],
)
def test_envelope(points: list[tuple[float, float]], curve: list[tuple[float, float]]) -> None:
    assert envelope(points) == curve


@pytest.mark.parametrize(("x", "y"), [(5, 5), (10, 5), (11, 4), (13.5, 1.5), (99, 0)])
def test_interpolate(x: float, y: float) -> None:
    assert interpolate([(10, 5), (12, 3), (15, 0)], x) == pytest.approx(y)


def test_sweep_and_its_verdict(tmp_path: Path) -> None:
    [default] = load_policy_file(POLICIES / "default.yaml")
    load = per_second((900, 300.0), (900, 1200.0), (900, 300.0), name="steps")
    result = sweep(default, load, default_sim_config(default, spin_up=10.0))
    assert len(result.hpa) == 22 and len(result.nomad) == 11
    assert {m for m, _, _ in result.hpa} == {"instant", "avg60"}
    curve = result.curve
    assert all(a[0] < b[0] and a[1] > b[1] for a, b in zip(curve, curve[1:], strict=False))
    g = result.grid
    met = g.minutes_under_capacity <= result.hpa_at_grid / 2 and (
        g.direction_changes <= result.hpa_changes
    )
    assert result.met is met
    assert result.verdict().startswith("met" if met else "MISSED")
    out = tmp_path / "sweep.png"
    plot_sweep(result, out, 100.0)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
