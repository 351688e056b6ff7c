"""The one error type users see for a bad experiment: raised before any work starts."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad experiment configuration, persona file or run folder.

    The message names the offending field (dotted path) so a user can fix the YAML directly.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class ShardFailedError(RuntimeError):
    """Too many of a shard's requests failed in the backend (a server down, say).

    The shard is not written, so re-running the same run id asks those agents again; shards
    already written stay as they are.
    """
