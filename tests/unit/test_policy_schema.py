"""The policy schema: every problem reported with its path, durations, amounts, round trips."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from grid.autoscaler.policy import (
    PoolPolicy,
    TargetValueCheck,
    load_policy_file,
    step_amount,
    validate_policy_text,
)
from grid.core.durations import format_duration, parse_duration
from grid.core.errors import PolicyError


class WrittenOut(yaml.SafeDumper):
    """Writes a repeated object out again rather than as an alias (policies refuse aliases)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def problems_of(body: dict[str, Any], pool: str = "web") -> list[str]:
    with pytest.raises(PolicyError) as info:
        validate_policy_text(yaml.dump({"policies": {pool: body}}, Dumper=WrittenOut))
    return info.value.problems


def base(**overrides: Any) -> dict[str, Any]:
    return {"min": 1, "max": 5, **overrides}


CPU = {"strategy": "threshold", "metric": "cpu_percent", "upper": 80, "lower": 20}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1d", 86400.0), ("500ms", 0.5),
        ("1h30m", 5400.0), ("1.5m", 90.0), ("45", 45.0), (10, 10.0), (2.5, 2.5), ("0s", 0.0),
        (" 2M ", 120.0),
    ],
)  # fmt: skip
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "5 m", "-1s", "1h-5m", "abc", "nan", "inf"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.5, "500ms"), (30, "30s"), (90, "1m30s"), (3600, "1h"), (86400 + 60, "1d1m")],
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("amount", "current", "nodes"),
    [(1, 10, 1), (4, 0, 4), ("50%", 10, 5), ("50%", 3, 2), ("10%", 3, 1), ("10%", 0, 1),
     ("25%", 8, 2), ("100%", 7, 7), ("33%", 100, 33)],
)  # fmt: skip
def test_step_amount(amount: int | str, current: int, nodes: int) -> None:
    assert step_amount(amount, current) == nodes


def test_minimal_policy_gets_defaults() -> None:
    [policy] = validate_policy_text("policies:\n  web: {min: 1, max: 3}\n")
    assert policy.pool == "web"
    assert policy.evaluation_interval == 30.0
    assert (policy.cooldown.scale_up, policy.cooldown.scale_down) == (60.0, 300.0)
    assert policy.tolerance == 0.1 and policy.on_check_error == "ignore" and not policy.dry_run
    assert policy.placement.strategy == "spread"
    assert policy.checks == []


def test_several_pools_in_one_file_and_default_check_names() -> None:
    text = yaml.safe_dump({"policies": {
        "web": base(checks=[CPU, {"strategy": "target_value", "metric": "request_rate",
                                  "target": 100, "aggregation": "p95", "window": "2m"}]),
        "api": base(checks=[{"strategy": "schedule", "periods": [
            {"start": "0 8 * * 1-5", "end": "0 18 * * 1-5", "min": 3}]}]),
    }}, sort_keys=False)  # fmt: skip
    web, api = validate_policy_text(text)
    assert [c.name for c in web.checks] == ["threshold/cpu_percent", "target_value/request_rate"]
    assert isinstance(web.checks[1], TargetValueCheck) and web.checks[1].window == 120.0
    assert api.checks[0].name == "schedule"


def test_placement_rules_are_embedded() -> None:
    body = base(placement={"strategy": "cost", "require_labels": {"tier": "ssd"}})
    [policy] = validate_policy_text(yaml.safe_dump({"policies": {"web": body}}))
    assert policy.placement.strategy == "cost"
    assert policy.placement.require_labels == {"tier": "ssd"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (base(min=3, max=2), "policies[web].max: must be >= min"),
        (base(min=-1), "policies[web].min: must be >= 0"),
        (base(max="x"), "policies[web].max: must be an integer"),
        (base(bogus=1), "policies[web].bogus: unknown key"),
        ({"max": 3}, "policies[web].min: required"),
        (base(evaluation_interval="5x"), "policies[web].evaluation_interval: bad duration '5x'"),
        (base(evaluation_interval="0s"), "policies[web].evaluation_interval: must be > 0"),
        (base(cooldown={"scale_up": "1m", "scale_dwn": "1m"}),
         "policies[web].cooldown.scale_dwn: unknown key"),
        (base(step_limits={"up": 0}), "policies[web].step_limits.up: must be >= 1"),
        (base(step_limits={"down": "x%"}), "policies[web].step_limits.down: must be a count"),
        (base(tolerance=1.5), "policies[web].tolerance: must be < 1"),
        (base(on_check_error="explode"), "policies[web].on_check_error: must be one of"),
        (base(dry_run="maybe"), "policies[web].dry_run: must be true or false"),
        (base(placement={"strategy": "cheap"}), "policies[web].placement.strategy: must be one"),
        (base(pool="other"), "policies[web].pool: unknown key"),
        (base(checks=[{**CPU, "upper": 10}]), "policies[web].checks[0].upper: must be > lower"),
        (base(checks=[{**CPU, "window": "1q"}]), "policies[web].checks[0].window: bad duration"),
        (base(checks=[{**CPU, "aggregation": "median"}]),
         "policies[web].checks[0].aggregation: must be one of"),
        (base(checks=[{**CPU, "metric": "cpu percent"}]),
         "policies[web].checks[0].metric: must be a metric name"),
        (base(checks=[{**CPU, "extra": 1}]), "policies[web].checks[0].extra: unknown key"),
        (base(checks=[{"strategy": "threshold", "metric": "cpu_percent"}]),
         "policies[web].checks[0]: a threshold needs upper, lower or both"),
        (base(checks=[{**CPU, "scale_up": {"add": 1, "set": 3}}]),
         "policies[web].checks[0].scale_up: give one of add, set"),
        (base(checks=[{**CPU, "scale_up": {"remove": 1}}]),
         "policies[web].checks[0].scale_up.remove: unknown key"),
        (base(checks=[{**CPU, "scale_down": {"remove": "0%"}}]),
         "policies[web].checks[0].scale_down.remove: must be a count"),
        (base(checks=[{"strategy": "nope"}]),
         "policies[web].checks[0].strategy: must be one of threshold, target_value"),
        (base(checks=[{"metric": "cpu_percent"}]), "policies[web].checks[0].strategy: must be"),
        (base(checks=[CPU, CPU]), "policies[web].checks[1].name: duplicate check name"),
        (base(checks=[{"strategy": "target_value", "metric": "m", "target": 0}]),
         "policies[web].checks[0].target: must be > 0"),
        (base(checks=[{"strategy": "target_value", "metric": "m"}]),
         "policies[web].checks[0].target: required"),
        (base(checks=[{"strategy": "target_value", "metric": "m", "target": 1, "tolerance": -1}]),
         "policies[web].checks[0].tolerance: must be >= 0"),
        (base(checks=[{"strategy": "schedule", "periods": []}]),
         "policies[web].checks[0].periods: must have at least 1 item"),
        (base(checks=[{"strategy": "schedule", "timezone": "Mars/Base",
                       "periods": [{"start": "0 8 * * *", "duration": "1h", "min": 1}]}]),
         "policies[web].checks[0].timezone: unknown time zone 'Mars/Base'"),
        (base(checks=[{"strategy": "schedule",
                       "periods": [{"start": "0 25 * * *", "duration": "1h", "min": 1}]}]),
         "policies[web].checks[0].periods[0].start: must be a cron expression"),
        (base(checks=[{"strategy": "schedule", "periods": [{"start": "0 8 * * *", "min": 1}]}]),
         "policies[web].checks[0].periods[0]: give exactly one of end, duration"),
        (base(checks=[{"strategy": "schedule",
                       "periods": [{"start": "0 8 * * *", "duration": "1h"}]}]),
         "policies[web].checks[0].periods[0]: give at least one of min, max, desired"),
        (base(checks=[{"strategy": "schedule", "periods": [
            {"start": "0 8 * * *", "duration": "1h", "min": 5, "max": 3}]}]),
         "policies[web].checks[0].periods[0].max: must be >= min"),
        (base(checks=[{"strategy": "schedule", "periods": [
            {"start": "0 8 * * *", "duration": "1h", "max": 3, "desired": 4}]}]),
         "policies[web].checks[0].periods[0].desired: must be <= max"),
        (base(checks=[{"strategy": "predictive", "metric": "m", "target": 1,
                       "history": "10m", "min_history": "1h"}]),
         "policies[web].checks[0].min_history: must be <= history"),
        (base(checks=[{"strategy": "predictive", "metric": "m", "target": 1,
                       "season": "1d", "history": "2h"}]),
         "policies[web].checks[0].history: must be >= season"),
        (base(checks=[{"strategy": "predictive", "metric": "m", "target": 1, "margin": -1}]),
         "policies[web].checks[0].margin: must be >= 0"),
        (base(checks=[{"strategy": "predictive", "metric": "m", "target": 1,
                       "aggregation": "avg"}]),
         "policies[web].checks[0].aggregation: unknown key"),
        (base(checks="cpu"), "policies[web].checks: must be a list"),
    ],
)  # fmt: skip
def test_each_problem_is_reported_with_its_path(body: dict[str, Any], expected: str) -> None:
    problems = problems_of(body)
    assert any(p.startswith(expected) for p in problems), problems


def test_validation_reports_every_problem_not_the_first() -> None:
    text = textwrap.dedent(
        """\
        policies:
          web:
            min: 3
            max: 2
            bogus: true
            evaluation_interval: soon
            checks:
              - {strategy: threshold, metric: cpu_percent, upper: 10, lower: 20, window: 1q}
              - {strategy: threshold, metric: rss_bytes}
              - {strategy: target_value, metric: request_rate, target: -1}
          Bad_Pool: {min: 1, max: 1}
        """
    )
    with pytest.raises(PolicyError) as info:
        validate_policy_text(text, source="web.yaml")
    problems = info.value.problems
    expected = [
        "web.yaml: policies[web].max: must be >= min",
        "web.yaml: policies[web].bogus: unknown key",
        "web.yaml: policies[web].evaluation_interval: bad duration 'soon'",
        "web.yaml: policies[web].checks[0].window: bad duration '1q'",
        "web.yaml: policies[web].checks[0].upper: must be > lower",
        "web.yaml: policies[web].checks[1]: a threshold needs upper, lower or both",
        "web.yaml: policies[web].checks[2].target: must be > 0",
        "web.yaml: policies[Bad_Pool]: pool name must be a DNS label",
    ]
    for item in expected:
        assert any(p.startswith(item) for p in problems), (item, problems)
    assert len(problems) == len(expected)
    assert str(info.value).count(";") == len(expected) - 1
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("policies: [", "invalid YAML"),
        ("- 1\n- 2\n", "top level must be a mapping"),
        ("policies: {}\n", "policies: must be a mapping of pool name to policy"),
        ("policy:\n  web: {min: 1, max: 2}\n", "policy: unknown key"),
        ("policies:\n  web: 3\n", "policies[web]: must be a mapping"),
        ("policies:\n  web: {min: 1, max: 2, min: 2}\n", "line 2: duplicate key 'min'"),
    ],
)
def test_file_level_problems(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as info:
        validate_policy_text(text)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_load_policy_file_prefixes_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("policies:\n  web: {min: 1}\n")
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    assert info.value.problems == [f"{path}: policies[web].max: required"]
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy_file(tmp_path / "missing.yaml")


def test_json_and_yaml_round_trips() -> None:
    body = base(
        evaluation_interval="15s",
        cooldown={"scale_up": "30s", "scale_down": "5m"},
        step_limits={"up": 4, "down": "25%"},
        placement={"strategy": "cost"},
        checks=[
            {**CPU, "scale_up": {"add": "50%"}, "window": "2m"},
            {"strategy": "schedule", "timezone": "Europe/Paris",
             "periods": [{"start": "0 8 * * 1-5", "end": "0 18 * * 1-5", "min": 3}]},
            {"strategy": "predictive", "metric": "request_rate", "target": 100, "season": "1d",
             "history": "1d", "shadow": True},
        ],
    )  # fmt: skip
    [policy] = validate_policy_text(yaml.safe_dump({"policies": {"web": body}}))
    assert PoolPolicy.from_json(policy.to_json()) == policy
    assert '"scale_down":"5m"' in policy.to_json()
    [again] = validate_policy_text(policy.to_yaml())
    assert again == policy


def test_a_yaml_alias_bomb_is_refused_at_its_first_alias() -> None:
    """Nine levels of nine aliases would expand to 10^8 elements; refused before expanding."""
    lines = ['a0: &a0 ["x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = "\n".join(lines) + "\npolicies: {web: {checks: *a9}}\n"
    with pytest.raises(PolicyError) as caught:
        validate_policy_text(bomb)
    assert "aliases (*name) are not allowed in a policy" in str(caught.value)


def test_a_policy_file_that_is_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("policies:\n  caf\xe9: {}\n".encode("latin-1"))
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    assert str(caught.value).strip() == f"{path}: not UTF-8 text (byte 15)"  # the é
