"""Platform adapters, chosen by name; optional dependencies are imported lazily."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import ValidationError

from grid.core.errors import ConfigError, MissingExtraError
from grid.platforms.base import Platform, PlatformConfig

# name -> (module, class, extra that provides its dependency or None)
_REGISTRY: dict[str, tuple[str, str, str | None]] = {
    "process": ("grid.platforms.process", "ProcessPlatform", None),
    "docker": ("grid.platforms.docker", "DockerPlatform", "docker"),
    "kubernetes": ("grid.platforms.kubernetes", "KubernetesPlatform", "kubernetes"),
    "systemd": ("grid.platforms.systemd", "SystemdPlatform", None),
    "sim": ("grid.platforms.sim", "SimPlatform", None),  # simulated nodes (grid sim)
}

PLATFORM_NAMES = tuple(_REGISTRY)


def platform_class(name: str) -> type[Platform]:
    try:
        module_name, class_name, extra = _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown platform {name!r}; choose one of: {', '.join(PLATFORM_NAMES)}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if extra and exc.name and not exc.name.startswith("grid"):
            raise MissingExtraError(
                f"platform {name!r} needs the {exc.name!r} package: pip install 'grid[{extra}]'"
            ) from None
        raise
    cls: type[Platform] = getattr(module, class_name)
    return cls


def create_platform(name: str, agent_id: str, config: dict[str, Any] | None = None) -> Platform:
    """Build an adapter, validating its configuration (errors name the key)."""
    return platform_class(name)(parse_config(name, config), agent_id)


def parse_config(name: str, config: dict[str, Any] | None) -> PlatformConfig:
    """The adapter's validated settings; ConfigError naming every bad key."""
    cls = platform_class(name)
    try:
        return cls.config_model(**(config or {}))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            problems.append(f"platform.{loc}: {err['msg'].lower()}")
        raise ConfigError("bad platform configuration: " + "; ".join(problems)) from None
