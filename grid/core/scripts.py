"""Grid's Lua scripts (package data in grid/core/lua/) and how they are called.

A script goes by EVAL with its text each time, through `execute_command`, on a client or
inside a pipeline. Not redis-py's `register_script`: inside a pipeline that asks SCRIPT
EXISTS before every execute (one more round trip on each heartbeat), Redis Cluster pipelines
refuse its EVALSHA, and a NOSCRIPT after a restart or failover would fail the pipeline.
Redis caches the compiled script by its SHA either way; a few hundred bytes more on the
wire cost less than a round trip.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from grid.core.rtypes import Redis


def lua_source(*names: str) -> str:
    """The text of the named scripts in grid/core/lua/, joined in order (a shared prelude
    first, e.g. events_common.lua)."""
    folder = resources.files("grid.core").joinpath("lua")
    return "".join(folder.joinpath(name).read_text() for name in names)


class LuaScript:
    def __init__(self, text: str, client: Redis) -> None:
        self.text = text
        self.client = client

    @classmethod
    def named(cls, name: str, client: Redis) -> LuaScript:
        return cls(lua_source(f"{name}.lua"), client)

    def __call__(self, keys: list[str], args: list[Any], client: Any = None) -> Any:
        """Run on `client` (a pipeline queues it), else on the script's own client."""
        target = self.client if client is None else client
        return target.execute_command("EVAL", self.text, len(keys), *keys, *args)
