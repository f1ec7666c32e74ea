"""Typed settings from `GRID_*` environment variables and an optional `grid.toml`.

Precedence: environment, then the TOML file (`GRID_CONFIG`, else `./grid.toml`), then defaults.
A bad value fails at start with one line that names the key and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from grid.core.errors import ConfigError

ENV_PREFIX = "GRID_"


def config_file() -> Path:
    return Path(os.environ.get("GRID_CONFIG", "grid.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    redis_url: str | None = Field(None, description="Redis URL; unset means the embedded server")
    # One Redis per role when one is not enough; each unset role uses redis_url. Any of the
    # three may be a Sentinel URL (grid.core.connection documents the forms).
    broker_url: str | None = Field(None, description="Celery broker and result backend Redis")
    state_url: str | None = Field(
        None, description="state store: records, desired sizes, policies, leases"
    )
    events_url: str | None = Field(None, description="event log and metrics store")
    state_min_replicas: int = Field(
        0, ge=0, description="replicas that must hold a desired size before `grid scale` returns"
    )
    home: Path = Field(Path(".grid"), description="folder of the embedded Redis and local state")

    heartbeat_interval: float = Field(5.0, gt=0, description="seconds between agent heartbeats")
    degraded_after: float = Field(15.0, gt=0, description="heartbeat silence before degraded")
    offline_after: float = Field(30.0, gt=0, description="heartbeat silence before offline")
    lease_ttl: float = Field(10.0, gt=0, description="master leadership lease, seconds")
    health_interval: float = Field(1.0, gt=0, description="seconds between master health ticks")
    reconcile_interval: float = Field(2.0, gt=0, description="seconds between periodic reconciles")
    autoscale_tick: float = Field(1.0, gt=0, description="seconds between autoscaler ticks")

    events_maxlen: int = Field(
        1_000_000, gt=0, description="memory cap: events kept (see docs/BENCHMARKS.md, bytes each)"
    )
    events_retention: float = Field(7 * 86400.0, gt=0, description="seconds of events kept")
    events_batch_size: int = Field(1000, ge=1, description="events per batch, buffered writers")
    events_flush_interval: float = Field(
        0.05, gt=0, description="seconds a buffered event may wait before it is written"
    )

    node_command: str = Field("grid-node", description="command that starts a storage node")
    node_start_timeout: float = Field(15.0, gt=0, description="seconds for a node to answer")
    spawn_timeout: float = Field(60.0, gt=0, description="pending node with no agent progress")
    view_resync_interval: float = Field(
        30.0, gt=0, description="seconds between the leader's full re-reads of every record"
    )
    stop_grace: float = Field(5.0, ge=0, description="SIGTERM to SIGKILL, seconds")
    max_pool_size: int = Field(100_000, ge=1, description="largest desired size of one pool")
    agent_concurrency: int = Field(8, ge=1, le=64, description="agent task threads")

    restart_backoff_base: float = Field(1.0, gt=0, description="first restart delay, seconds")
    restart_backoff_max: float = Field(30.0, gt=0, description="cap on the restart delay")
    crash_limit: int = Field(5, ge=1, description="crashes in the window before failed")
    crash_window: float = Field(60.0, gt=0, description="window for crash_limit, seconds")

    metrics_interval: float = Field(5.0, gt=0, description="seconds between node samples")
    metrics_retention: float = Field(3600.0, gt=0, description="seconds of samples kept")
    metrics_history_retention: float = Field(
        7 * 86400.0, gt=0, description="seconds of per-minute pool history (forecasts)"
    )

    backup_interval: float = Field(
        3600.0, ge=0, description="seconds between the leader's scheduled backups; 0 off"
    )
    backup_keep: int = Field(24, ge=1, description="scheduled backups kept (older ones deleted)")
    backup_dir: Path | None = Field(
        None, description="folder of backups; unset means <GRID_HOME>/backups"
    )

    http_host: str = Field("127.0.0.1", description="address of the master's pages")
    http_port: int = Field(8700, ge=-1, le=65535, description="master pages port; 0 any, -1 off")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def describe_validation_error(exc: ValidationError, prefix: str = ENV_PREFIX) -> str:
    """One line naming each bad key the way the user wrote it (GRID_HEARTBEAT_INTERVAL)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        key = f"{prefix}{loc.upper()}" if prefix else loc
        parts.append(f"{key}: {err['msg'].lower()} (got {err.get('input')!r})")
    return "; ".join(parts)


def load_settings(**overrides: Any) -> Settings:
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"bad setting: {describe_validation_error(exc)}") from None
    except (OSError, ValueError) as exc:  # unreadable or malformed TOML
        raise ConfigError(f"bad config file {config_file()}: {exc}") from None
    if settings.offline_after <= settings.degraded_after:
        raise ConfigError(
            "bad setting: GRID_OFFLINE_AFTER must be greater than GRID_DEGRADED_AFTER "
            f"(got {settings.offline_after} <= {settings.degraded_after})"
        )
    return settings
