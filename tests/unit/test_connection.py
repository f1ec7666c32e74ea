"""grid.core.connection: one URL per Redis role, Sentinel URLs, passwords masked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from grid.core.celery_app import app, configure
from grid.core.connection import (
    celery_options,
    connect_url,
    mask_url,
    parse_sentinel_url,
    role_url,
)
from grid.core.errors import ConfigError, RedisUnavailableError
from grid.core.ports import free_port
from grid.core.settings import load_settings

SENTINEL = (
    "sentinel://:pw0@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"
    "?master_name=grid"
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("GRID_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_every_role_defaults_to_the_one_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRID_REDIS_URL", "redis://one:6379/0")
    settings = load_settings()
    assert {role_url(settings, r) for r in ("broker", "state", "events")} == {"redis://one:6379/0"}


def test_each_role_has_its_own_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRID_REDIS_URL", "redis://one:6379/0")
    monkeypatch.setenv("GRID_BROKER_URL", "redis://broker:6379/0")
    monkeypatch.setenv("GRID_STATE_URL", "redis://state:6379/0")
    monkeypatch.setenv("GRID_EVENTS_URL", "redis://events:6379/0")
    settings = load_settings()
    assert role_url(settings, "broker") == "redis://broker:6379/0"
    assert role_url(settings, "state") == "redis://state:6379/0"
    assert role_url(settings, "events") == "redis://events:6379/0"


def test_no_url_and_no_embedded_server_names_the_setting() -> None:
    with pytest.raises(RedisUnavailableError, match="GRID_REDIS_URL"):
        role_url(load_settings(), "state")


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://user:secret@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://secret@host:6380", "rediss://***@host:6380"),
        ("redis://host:6379/0?password=secret&db=1", "redis://host:6379/0?password=***&db=1"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        (SENTINEL, SENTINEL.replace("pw0", "***")),
        (
            "sentinel://:a@h1:1;sentinel://u:b@h2:2?master_name=m",
            "sentinel://:***@h1:1;sentinel://u:***@h2:2?master_name=m",
        ),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_parse_sentinel_url() -> None:
    target = parse_sentinel_url(SENTINEL)
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("10.0.0.3", 26379))
    assert (target.master_name, target.db, target.username, target.password) == (
        "grid",
        2,
        None,
        "pw0",
    )
    # what kombu and Celery read: their own form, without Grid's master_name
    assert target.kombu_url == (
        "sentinel://:pw0@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://10.0.0.3:26379"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sentinel://h1:26379;sentinel://h2:26379", "master_name=NAME"),
        ("sentinel://h1:26379?master_name=", "master_name=NAME"),
        ("sentinel://h1:1?master_name=a;sentinel://h2:2?master_name=b", "master_name=NAME"),
        ("sentinel://h1:1?master_name=a&mastername=b", "unknown option(s) mastername"),
        ("sentinel://:pw0@h1:1;redis://h2:2?master_name=a", "sentinel://HOST:PORT"),
        ("sentinel://:pw0@h1:1/zero?master_name=a", "must be a number"),
        ("sentinel://:pw0@h1:99999?master_name=a", "bad port"),
    ],
)
def test_bad_sentinel_urls_are_named_without_the_password(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="bad Sentinel URL") as err:
        parse_sentinel_url(url)
    assert problem in str(err.value)
    assert "pw0" not in str(err.value)


def test_celery_gets_the_master_name_as_a_transport_option() -> None:
    assert celery_options("redis://h:1/0") == ("redis://h:1/0", {})
    url, options = celery_options(SENTINEL)
    assert url == parse_sentinel_url(SENTINEL).kombu_url
    assert options == {"master_name": "grid"}
    try:
        configure(SENTINEL)
        assert app.conf.broker_url == url
        assert app.conf.result_backend == url
        assert app.conf.broker_transport_options["master_name"] == "grid"
        assert app.conf.result_backend_transport_options["master_name"] == "grid"
        assert app.conf.broker_transport_options["visibility_timeout"] == 3600
    finally:
        configure("redis://127.0.0.1:6379/0")
    assert "master_name" not in app.conf.broker_transport_options


def test_unreachable_redis_error_masks_the_password() -> None:
    port = free_port()  # nothing listens there
    masked = r"cannot reach Redis at redis://:\*\*\*@127"
    with pytest.raises(RedisUnavailableError, match=masked) as err:
        connect_url(f"redis://:hunter2@127.0.0.1:{port}/0")
    assert "hunter2" not in str(err.value)
