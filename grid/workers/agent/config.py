"""The agent configuration file (`grid agent --config agent.toml`).

    [agent]
    id = "agent-1"
    platform = "docker"
    max_nodes = 10
    cost = 0.5
    labels = { zone = "a" }

    [platform]          # the adapter's own settings, validated by the adapter
    image = "grid:latest"

Command-line flags override the file. Errors name the key (`agent.max_nodes: ...`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from grid.core.errors import ConfigError


class AgentSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    platform: str = "process"
    max_nodes: int = Field(10, ge=1, le=10_000)
    cost: float = Field(0.0, ge=0)
    labels: dict[str, str] = Field(default_factory=dict)


class AgentFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: AgentSection = Field(default_factory=lambda: AgentSection())
    platform: dict[str, Any] = Field(default_factory=dict)


def load_agent_config(path: Path) -> AgentFile:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"agent config {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"agent config {path} is a directory, not a TOML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"agent config {path} is not UTF-8 text (byte {exc.start}): is it a TOML file?"
        ) from None
    except OSError as exc:
        raise ConfigError(f"agent config {path} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"agent config {path} is not valid TOML: {exc}") from None
    try:
        return AgentFile(**raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg'].lower()}" for err in exc.errors()
        ]
        raise ConfigError(f"agent config {path}: " + "; ".join(problems)) from None
