"""A pool's placement constraints: the `placement:` block of a policy, read by the master's
placement (grid.workers.master.placement) and validated with the policy schema."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PlacementRules(BaseModel):
    """A pool's placement constraints (the `placement:` block of a policy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["spread", "cost"] = "spread"
    platforms: list[str] = Field(
        default_factory=list, description="allowed platforms (all if empty)"
    )
    prefer_platforms: list[str] = Field(default_factory=list)
    require_labels: dict[str, str] = Field(default_factory=dict)
    prefer_labels: dict[str, str] = Field(default_factory=dict)


DEFAULT_RULES = PlacementRules()
