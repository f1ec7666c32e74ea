"""Typed settings (grid.core.settings): GRID_* env vars, grid.toml, defaults, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from grid.core.errors import ConfigError
from grid.core.settings import Settings, config_file, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No GRID_* variable from the caller, and a folder with no grid.toml."""
    for key in list(os.environ):
        if key.startswith("GRID_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults() -> None:
    s = load_settings()
    assert s.redis_url is None
    assert s.home == Path(".grid")
    assert (s.heartbeat_interval, s.degraded_after, s.offline_after) == (5.0, 15.0, 30.0)
    assert s.events_maxlen == 1_000_000
    assert s.events_retention == 7 * 86400.0
    assert s.node_command == "grid-node"
    assert s.agent_concurrency == 8
    assert s.log_level == "INFO" and s.log_format == "text"


def test_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRID_REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("GRID_HEARTBEAT_INTERVAL", "0.5")
    monkeypatch.setenv("GRID_EVENTS_MAXLEN", "42")
    monkeypatch.setenv("GRID_HOME", "/var/lib/grid")
    monkeypatch.setenv("GRID_LOG_FORMAT", "json")
    s = load_settings()
    assert s.redis_url == "redis://example:6380/2"
    assert s.heartbeat_interval == 0.5
    assert s.events_maxlen == 42
    assert s.home == Path("/var/lib/grid")
    assert s.log_format == "json"


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError):
        s.heartbeat_interval = 1.0  # type: ignore[misc]


def test_toml_file_from_grid_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "conf" / "custom.toml"
    path.parent.mkdir()
    path.write_text('heartbeat_interval = 2.5\nnode_command = "my-node --fast"\nstop_grace = 0\n')
    monkeypatch.setenv("GRID_CONFIG", str(path))
    assert config_file() == path
    s = load_settings()
    assert s.heartbeat_interval == 2.5
    assert s.node_command == "my-node --fast"
    assert s.stop_grace == 0


def test_grid_toml_in_the_current_folder_is_read(tmp_path: Path) -> None:
    (tmp_path / "grid.toml").write_text("crash_limit = 9\n")
    assert load_settings().crash_limit == 9


def test_env_overrides_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "grid.toml").write_text("crash_limit = 9\nmetrics_interval = 7\n")
    monkeypatch.setenv("GRID_CRASH_LIMIT", "3")
    s = load_settings()
    assert s.crash_limit == 3  # env wins
    assert s.metrics_interval == 7  # file beats the default


def test_overrides_beat_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRID_CRASH_LIMIT", "3")
    assert load_settings(crash_limit=4).crash_limit == 4


def test_missing_grid_config_file_means_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRID_CONFIG", "/nonexistent/grid.toml")
    assert load_settings().heartbeat_interval == 5.0


BAD_ENV = [
    pytest.param("GRID_HEARTBEAT_INTERVAL", "abc", id="not-a-number"),
    pytest.param("GRID_HEARTBEAT_INTERVAL", "0", id="not-positive"),
    pytest.param("GRID_EVENTS_MAXLEN", "1.5", id="not-an-int"),
    pytest.param("GRID_AGENT_CONCURRENCY", "65", id="above-max"),
    pytest.param("GRID_STOP_GRACE", "-1", id="negative"),
    pytest.param("GRID_LOG_LEVEL", "LOUD", id="not-a-choice"),
    pytest.param("GRID_LOG_FORMAT", "xml", id="not-a-format"),
]


@pytest.mark.parametrize(("key", "value"), BAD_ENV)
def test_bad_env_value_names_the_key(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert key in message
    assert repr(value) in message or value in message
    assert "\n" not in message
    assert info.value.exit_code == 2


def test_every_bad_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRID_HEARTBEAT_INTERVAL", "abc")
    monkeypatch.setenv("GRID_CRASH_LIMIT", "0")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "GRID_HEARTBEAT_INTERVAL" in str(info.value)
    assert "GRID_CRASH_LIMIT" in str(info.value)


def test_bad_value_in_the_file_names_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "g.toml"
    path.write_text('lease_ttl = "soon"\n')
    monkeypatch.setenv("GRID_CONFIG", str(path))
    with pytest.raises(ConfigError, match="LEASE_TTL"):
        load_settings()


def test_malformed_file_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("heartbeat_interval = = 1\n")
    monkeypatch.setenv("GRID_CONFIG", str(path))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("degraded", "offline"), [("15", "15"), ("20", "10")])
def test_offline_after_must_exceed_degraded_after(
    monkeypatch: pytest.MonkeyPatch, degraded: str, offline: str
) -> None:
    monkeypatch.setenv("GRID_DEGRADED_AFTER", degraded)
    monkeypatch.setenv("GRID_OFFLINE_AFTER", offline)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "GRID_OFFLINE_AFTER" in str(info.value)
    assert "GRID_DEGRADED_AFTER" in str(info.value)


def test_offline_after_just_above_degraded_after_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRID_DEGRADED_AFTER", "1.5")
    monkeypatch.setenv("GRID_OFFLINE_AFTER", "1.6")
    s = load_settings()
    assert (s.degraded_after, s.offline_after) == (1.5, 1.6)


def test_unknown_grid_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRID_SOMETHING_ELSE", "x")
    assert isinstance(load_settings(), Settings)
