"""Autoscaling policy files: the one schema shared by the CLI and the autoscaler.

A policy file holds one or several pool policies under ``policies:``, keyed by pool name::

    policies:
      web:                          # the pool (a DNS label)
        min: 2                      # hard bounds on the pool size
        max: 20
        evaluation_interval: 30s    # how often the pool is evaluated
        cooldown:                   # per direction; see engine.py for exact semantics
          scale_up: 1m
          scale_down: 5m
        step_limits:                # largest change per evaluation: a count or "N%"
          up: 4
          down: 25%
        tolerance: 0.1              # default tolerance of target_value/predictive checks
        on_check_error: ignore      # ignore: a failing check abstains; fail: hold
        dry_run: false              # record decisions, never change the pool
        placement: {strategy: cost} # grid.core.placement_rules.PlacementRules
        checks:
          - name: cpu
            strategy: threshold     # threshold | target_value | schedule | predictive | capacity
            metric: cpu_percent
            aggregation: avg        # avg | max | min | sum | p95
            window: 2m
            upper: 80
            lower: 30
            scale_up: {add: 50%}    # add: N | "N%", or set: N
            scale_down: {remove: 1} # remove: N | "N%", or set: N

Durations are ``500ms``, ``30s``, ``5m``, ``1h``, ``1d`` or compounds (``1h30m``); a bare number
is seconds. Unknown keys and bad values are errors; :func:`validate_policy_text` reports every
problem with its path (``policies[web].checks[0].upper: must be > lower``) and never stops at
the first one. docs/AUTOSCALING.md is the full reference.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from grid.core.durations import format_duration, parse_duration
from grid.core.errors import PolicyError
from grid.core.naming import valid_id
from grid.core.placement_rules import PlacementRules

# ---- durations (grid.core.durations) ----------------------------------------------------------


def _duration(value: Any) -> float:
    if not isinstance(value, str | int | float):
        raise ValueError("must be a duration like 30s, 5m or 1h")
    return parse_duration(value)


Duration = Annotated[
    float,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
PositiveDuration = Annotated[Duration, Field(gt=0)]

# ---- step amounts: a count or a percentage of the current size ---------------------------

_PERCENT_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")


def _amount(value: Any) -> int | str:
    if isinstance(value, bool):
        raise ValueError("must be a count >= 1 or a percentage like 50%")
    if isinstance(value, int):
        if value < 1:
            raise ValueError("must be >= 1")
        return value
    if isinstance(value, str):
        match = _PERCENT_RE.match(value.strip())
        if match and float(match.group(1)) > 0:
            return f"{float(match.group(1)):g}%"
    raise ValueError("must be a count >= 1 or a percentage like 50%")


Amount = Annotated[int | str, BeforeValidator(_amount)]


def step_amount(amount: int | str, current: int) -> int:
    """Nodes an amount stands for at `current`: a count, or ceil(percent of current), at least 1."""
    if isinstance(amount, int):
        return amount
    percent = float(amount.rstrip("%"))
    return max(1, math.ceil(round(current * percent / 100.0, 9)))


# ---- checks --------------------------------------------------------------------------------

Aggregation = Literal["avg", "max", "min", "sum", "p95"]
_METRIC_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,99}$")


def _metric_name(value: Any) -> str:
    if not isinstance(value, str) or not _METRIC_RE.match(value):
        raise ValueError("must be a metric name (letters, digits, _ . : -)")
    return value


MetricName = Annotated[str, BeforeValidator(_metric_name)]


def default_check_name(raw: Mapping[str, Any]) -> str:
    """`strategy/metric` (or the strategy alone): the name of a check that has none."""
    strategy = str(raw.get("strategy", "check"))
    metric = raw.get("metric")
    return f"{strategy}/{metric}" if isinstance(metric, str) else strategy


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Check(_Model):
    name: str = ""

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name"):
            return {**data, "name": default_check_name(data)}
        return data


class _MetricCheck(_Check):
    metric: MetricName
    aggregation: Aggregation = "avg"
    window: PositiveDuration = 60.0


def _only_one(data: Any, first: str, second: str) -> Any:
    if isinstance(data, dict) and data.get(first) is not None and data.get(second) is not None:
        raise ValueError(f"give one of {first}, {second}")
    return data


class ScaleUp(_Model):
    """What a threshold check does above `upper`: add a count or percentage, or set a size."""

    add: Amount | None = None
    set: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _one(cls, data: Any) -> Any:
        return _only_one(data, "add", "set")


class ScaleDown(_Model):
    """What a threshold check does below `lower`: remove a count or percentage, or set a size."""

    remove: Amount | None = None
    set: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _one(cls, data: Any) -> Any:
        return _only_one(data, "remove", "set")


class ThresholdCheck(_MetricCheck):
    """Step scaling: above `upper` scale up, below `lower` scale down, in between hold."""

    strategy: Literal["threshold"]
    lower: float | None = None
    upper: float | None = None
    scale_up: ScaleUp = ScaleUp(add=1)
    scale_down: ScaleDown = ScaleDown(remove=1)

    @field_validator("upper")
    @classmethod
    def _upper_above_lower(cls, value: float | None, info: ValidationInfo) -> float | None:
        lower = info.data.get("lower")
        if value is not None and lower is not None and value <= lower:
            raise ValueError("must be > lower")
        return value


class TargetValueCheck(_MetricCheck):
    """Proportional (Kubernetes HPA) rule: desired = ceil(current x value / target)."""

    strategy: Literal["target_value"]
    target: Annotated[float, Field(gt=0)]
    tolerance: Annotated[float, Field(ge=0, lt=1)] | None = None


def _cron(value: Any) -> str:
    if not isinstance(value, str) or not croniter.is_valid(value):
        raise ValueError("must be a cron expression like '0 8 * * 1-5'")
    return value


Cron = Annotated[str, BeforeValidator(_cron)]


class Period(_Model):
    """A window of time starting at each `start` and lasting until `end` (cron) or `duration`."""

    start: Cron
    end: Cron | None = None
    duration: PositiveDuration | None = None
    min: Annotated[int, Field(ge=0)] | None = None
    max: Annotated[int, Field(ge=0)] | None = None
    desired: Annotated[int, Field(ge=0)] | None = None

    @field_validator("max")
    @classmethod
    def _max_above_min(cls, value: int | None, info: ValidationInfo) -> int | None:
        low = info.data.get("min")
        if value is not None and low is not None and value < low:
            raise ValueError("must be >= min")
        return value

    @field_validator("desired")
    @classmethod
    def _desired_in_bounds(cls, value: int | None, info: ValidationInfo) -> int | None:
        low, high = info.data.get("min"), info.data.get("max")
        if value is not None and low is not None and value < low:
            raise ValueError("must be >= min")
        if value is not None and high is not None and value > high:
            raise ValueError("must be <= max")
        return value


def _timezone(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a time zone name like Europe/Paris")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


class ScheduleCheck(_Check):
    """Time-based: while a period is active it sets min/max and may vote a desired size."""

    strategy: Literal["schedule"]
    timezone: Annotated[str, BeforeValidator(_timezone)] = "UTC"
    periods: Annotated[list[Period], Field(min_length=1)]


class PredictiveCheck(_Check):
    """Forecast the pool total of `metric` over `horizon` and provision `target` per node.

    It scales out ahead of demand, never in unless `scale_in`; without `min_history` of data it
    abstains so the reactive checks decide; `shadow` only records the vote and forecast error.
    """

    strategy: Literal["predictive"]
    metric: MetricName
    target: Annotated[float, Field(gt=0)]
    horizon: PositiveDuration = 600.0
    season: PositiveDuration | None = None
    history: PositiveDuration = 7200.0
    min_history: PositiveDuration = 1800.0
    resolution: PositiveDuration = 60.0
    margin: Annotated[float, Field(ge=0)] = 0.0
    scale_in: bool = False
    shadow: bool = False

    @field_validator("history")
    @classmethod
    def _history_covers_season(cls, value: float, info: ValidationInfo) -> float:
        season = info.data.get("season")
        if season is not None and value < season:
            raise ValueError("must be >= season (fit at least one full season)")
        return value

    @field_validator("min_history")
    @classmethod
    def _min_history_fits(cls, value: float, info: ValidationInfo) -> float:
        history = info.data.get("history")
        if history is not None and value > history:
            raise ValueError("must be <= history")
        return value


class CapacityCheck(_Check):
    """Keep the capacity the pool total of `metric` needs: scale up fast, down carefully.

    Up: within one evaluation to ceil(total / (capacity x utilization)), no tolerance band,
    no step limit - or to what a forecast says the next `spin_up` needs, while that forecast's
    recent error is at most `max_error`. Down: only to what the peak of the last `hold` (and
    the forecasts' upper band over the next `spin_up`) needs. See strategies/capacity.py.
    """

    strategy: Literal["capacity"]
    metric: MetricName
    capacity: Annotated[float, Field(gt=0)]
    window: PositiveDuration | None = None  # default: the pool's evaluation_interval
    utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    spin_up: Annotated[Duration, Field(ge=0)] = 60.0
    hold: Annotated[Duration, Field(ge=0)] = 120.0
    trend: PositiveDuration = 300.0
    max_error: Annotated[float, Field(gt=0)] = 0.1
    periods: bool = True


Check = Annotated[
    ThresholdCheck | TargetValueCheck | ScheduleCheck | PredictiveCheck | CapacityCheck,
    Field(discriminator="strategy"),
]
CHECK_MODELS = get_args(get_args(Check)[0])
# Strategy names, from each check model's `strategy: Literal[...]` (grid.autoscaler.strategies
# maps each to its function).
STRATEGIES: tuple[str, ...] = tuple(
    get_args(model.model_fields["strategy"].annotation)[0] for model in CHECK_MODELS
)
MetricChecks = (ThresholdCheck, TargetValueCheck, PredictiveCheck, CapacityCheck)

# ---- the pool policy -----------------------------------------------------------------------


class Cooldown(_Model):
    scale_up: Duration = 60.0
    scale_down: Duration = 300.0


class StepLimits(_Model):
    up: Amount | None = None
    down: Amount | None = None


class PoolPolicy(_Model):
    """Everything the autoscaler knows about one pool."""

    pool: str
    description: str = ""
    min: Annotated[int, Field(ge=0)]
    max: Annotated[int, Field(ge=1)]
    evaluation_interval: PositiveDuration = 30.0
    cooldown: Cooldown = Cooldown()
    step_limits: StepLimits = StepLimits()
    tolerance: Annotated[float, Field(ge=0, lt=1)] = 0.1
    on_check_error: Literal["ignore", "fail"] = "ignore"
    dry_run: bool = False
    placement: PlacementRules = PlacementRules()
    checks: list[Check] = Field(default_factory=list)

    @field_validator("max")
    @classmethod
    def _max_above_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min")
        if low is not None and value < low:
            raise ValueError("must be >= min")
        return value

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> PoolPolicy:
        return cls.model_validate_json(text)

    def to_yaml(self) -> str:
        """This policy as a policy file (`policies: {pool: ...}`) with only non-default keys."""
        body = self.model_dump(mode="json", exclude_defaults=True, exclude={"pool"})
        return yaml.safe_dump({"policies": {self.pool: body}}, sort_keys=False)


# ---- validation with every problem reported ------------------------------------------------


def validate_policy_text(text: str, source: str | None = None) -> list[PoolPolicy]:
    """Parse a policy file's text; raise PolicyError listing every problem with its path."""
    prefix = f"{source}: " if source else ""
    duplicates: list[str] = []
    try:
        document = yaml.load(text, Loader=_loader(duplicates))  # SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PolicyError([f"{prefix}invalid YAML: {_one_line(str(exc))}"]) from None
    problems = [f"{prefix}{d}" for d in duplicates]
    policies: list[PoolPolicy] = []
    if not isinstance(document, dict):
        problems.append(f"{prefix}top level must be a mapping with a `policies:` key")
        raise PolicyError(problems)
    for key in document:
        if key != "policies":
            problems.append(f"{prefix}{key}: unknown key (expected `policies:`)")
    pools = document.get("policies")
    if not isinstance(pools, dict) or not pools:
        problems.append(f"{prefix}policies: must be a mapping of pool name to policy")
        raise PolicyError(problems)
    for name, body in pools.items():
        path = f"policies[{name}]"
        found = _structure_problems(str(name), body, path)
        policy: PoolPolicy | None = None
        if isinstance(body, dict) and "pool" not in body:
            try:
                policy = PoolPolicy.model_validate({**body, "pool": str(name)})
            except ValidationError as exc:
                found.extend(_pydantic_problems(exc, path))
        problems.extend(f"{prefix}{p}" for p in _dedupe(found))
        if policy is not None:
            policies.append(policy)
    if problems:
        raise PolicyError(problems)
    return policies


def load_policy_file(path: str | Path) -> list[PoolPolicy]:
    """Read and validate one policy file; PolicyError lists every problem, prefixed by the file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    return validate_policy_text(text, source=str(path))


def _structure_problems(name: str, body: Any, path: str) -> list[str]:
    """Rules on which keys are present, which pydantic would only check after all values pass."""
    problems: list[str] = []
    if not valid_id(name):
        problems.append(f"{path}: pool name must be a DNS label (a-z, 0-9, -)")
    if not isinstance(body, dict):
        return [*problems, f"{path}: must be a mapping"]
    if "pool" in body:
        problems.append(f"{path}.pool: unknown key (the pool is the key under `policies:`)")
    checks = body.get("checks")
    if not isinstance(checks, list):
        return problems
    seen: dict[str, int] = {}
    for index, check in enumerate(checks):
        here = f"{path}.checks[{index}]"
        if not isinstance(check, dict):
            continue
        check_name = str(check.get("name") or default_check_name(check))
        if check_name in seen:
            problems.append(
                f"{here}.name: duplicate check name {check_name!r} "
                f"(also checks[{seen[check_name]}]); set distinct `name:`s"
            )
        seen.setdefault(check_name, index)
        strategy = check.get("strategy")
        if strategy == "threshold" and check.get("upper") is None and check.get("lower") is None:
            problems.append(f"{here}: a threshold needs upper, lower or both")
        periods = check.get("periods") if strategy == "schedule" else None
        for p_index, period in enumerate(periods if isinstance(periods, list) else []):
            if not isinstance(period, dict):
                continue
            where = f"{here}.periods[{p_index}]"
            if ("end" in period) == ("duration" in period):
                problems.append(f"{where}: give exactly one of end, duration")
            if not any(k in period for k in ("min", "max", "desired")):
                problems.append(f"{where}: give at least one of min, max, desired")
    return problems


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required",
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "too_short": "must have at least {min_length} item(s)",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "literal_error": "must be one of {expected}",
}


def _pydantic_problems(exc: ValidationError, path: str) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        loc = [part for i, part in enumerate(err["loc"]) if not _is_tag(err["loc"], i)]
        where = path + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
        kind = err["type"]
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            where += ".strategy"
            message = f"must be one of {', '.join(STRATEGIES)}"
        else:
            template = _MESSAGES.get(kind)
            ctx = err.get("ctx", {})
            try:
                message = template.format(**ctx) if template else ""
            except (KeyError, IndexError):
                message = ""
            message = message or str(err["msg"]).removeprefix("Value error, ")
        out.append(f"{where}: {message}")
    return out


def _is_tag(loc: tuple[int | str, ...], index: int) -> bool:
    """Pydantic puts the discriminator value after a list index; paths leave it out."""
    return index > 0 and isinstance(loc[index - 1], int) and loc[index] in STRATEGIES


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _loader(duplicates: list[str]) -> type[yaml.SafeLoader]:
    """A SafeLoader that records duplicate mapping keys (PyYAML silently keeps the last) and
    refuses aliases: a policy needs none, and nested aliases expand exponentially (a few
    lines of `*a` can stand for 10^7 elements: seconds and hundreds of MB to convert)."""

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.events.AliasEvent):
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, "aliases (*name) are not allowed in a policy", mark
                )
            return super().compose_node(parent, index)

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)  # type: ignore[no-untyped-call]
            if not isinstance(key, str | int | float | bool):
                continue
            if key in seen:
                line = key_node.start_mark.line + 1
                duplicates.append(f"line {line}: duplicate key {key!r}")
            seen.add(key)
        return loader.construct_mapping(node)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader
