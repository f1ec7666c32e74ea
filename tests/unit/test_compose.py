"""docker-compose.yml and the Dockerfile: what they run is what the real CLI accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from grid.cli.main import cli
from grid.core.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
GRID_IMAGE = "grid:latest"
REDIS_URL = "redis://redis:6379/0"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def grid_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("image") == GRID_IMAGE}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def parse_grid_command(args: list[str]) -> click.Context:
    """Parse `grid <args>` down to the subcommand, as the real CLI would, without running it."""
    assert args and not args[0].startswith("-"), "the command comes first"
    ctx = cli.make_context("grid", list(args))
    command = cli.get_command(ctx, args[0])
    if command is None:
        raise click.UsageError(f"no such command {args[0]!r}", ctx)
    return command.make_context(args[0], list(args[1:]), parent=ctx)


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"redis", "master", "agent-1", "agent-2", "flower"}
    assert set(grid_services(compose)) == {"master", "agent-1", "agent-2", "flower"}


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("master", {}),
        ("agent-1", {"agent_id": "agent-1", "platform": "process", "max_nodes": 10}),
        ("agent-2", {"agent_id": "agent-2", "platform": "docker", "max_nodes": 10}),
        ("flower", {"port": 5555, "address": "0.0.0.0"}),
    ],
)
def test_commands_parse_with_the_real_cli(
    compose: dict[str, Any], service: str, expected: dict[str, Any]
) -> None:
    args = compose["services"][service]["command"]
    assert isinstance(args, list) and all(isinstance(a, str) for a in args)
    ctx = parse_grid_command(args)
    assert ctx.command.name == args[0]
    for key, value in expected.items():
        assert ctx.params[key] == value, f"{service}: {key}"


def test_a_bad_command_would_be_caught() -> None:
    with pytest.raises(click.UsageError):
        parse_grid_command(["agent", "--id", "a", "--platform", "no-such-platform"])
    with pytest.raises(click.UsageError):
        parse_grid_command(["no-such-command"])


def test_environment_is_known_settings(compose: dict[str, Any]) -> None:
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    for name, service in compose["services"].items():
        unknown = set(environment(service)) - known
        assert not unknown, f"{name}: unknown settings {sorted(unknown)}"
    for name, service in grid_services(compose).items():
        assert environment(service).get("GRID_REDIS_URL") == REDIS_URL, name


def test_redis_is_durable(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    volume = next(v for v in redis["volumes"] if v.endswith(":/data"))
    assert volume.split(":")[0] in compose["volumes"], "Redis data must be on a named volume"


def test_depends_on_is_consistent(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for target, spec in depends.items():
            assert target in services and target != name, f"{name} depends on {target}"
            if spec.get("condition") == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
    for name in grid_services(compose):
        assert "redis" in (services[name].get("depends_on") or {}), f"{name} needs redis"
    assert not services["redis"].get("depends_on")


def test_docker_agent_reaches_docker_and_redis(compose: dict[str, Any]) -> None:
    agent = compose["services"]["agent-2"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in agent["volumes"]
    # On the host network (to reach its nodes at 127.0.0.1), Redis is the published port.
    assert agent["network_mode"] == "host"
    assert "redis:127.0.0.1" in agent["extra_hosts"]
    assert any(str(p).startswith("127.0.0.1:6379:") for p in compose["services"]["redis"]["ports"])


def test_dockerfile_runs_grid_with_the_docker_extra() -> None:
    text = DOCKERFILE.read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert 'ENTRYPOINT ["grid"]' in text
    install = next(line for line in text.splitlines() if "pip install" in line)
    assert "docker" in install and "flower" in install


def compose_command() -> list[str] | None:
    """`docker compose` or `docker-compose`, if either works here."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_the_file() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
