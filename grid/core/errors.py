"""One rooted error tree.

`temporary` tells the Celery task layer whether a failure is worth a retry
(a Redis hiccup, a daemon that is restarting) or is permanent (a bad image).
"""

from __future__ import annotations


class GridError(Exception):
    """Root of every error Grid raises on purpose."""

    temporary = False
    exit_code = 1


class ConfigError(GridError):
    """Bad settings, bad CLI input or a bad configuration file."""

    exit_code = 2


class PolicyError(ConfigError):
    """An autoscaling policy failed validation; `problems` lists every one with its path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class NotFoundError(ConfigError):
    """An agent, node or pool named by the user does not exist."""


class ConflictError(GridError):
    """The request clashes with live state (for example an agent id held by a live agent)."""

    exit_code = 2


class RedisUnavailableError(GridError):
    """No Redis server could be reached."""

    exit_code = 2
    temporary = True


class PlatformError(GridError):
    """A platform adapter failed to act on a node."""


class PlatformUnavailableError(PlatformError):
    """The platform's backend (daemon, API server) cannot be reached right now."""

    temporary = True


class SpawnError(PlatformError):
    """A node could not be started (bad command or image, no health in time)."""


class UnsafeInputError(PlatformError, ConfigError):
    """Refused: an id that is not DNS-label shaped, or a path that would leave its root.

    Never temporary: a message carrying one is forged or corrupt, and is reported
    (event `security_violation`), not retried.
    """

    exit_code = 2


class MissingExtraError(PlatformError, ConfigError):
    """An optional dependency of an adapter is not installed."""

    exit_code = 2
