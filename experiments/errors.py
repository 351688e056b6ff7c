"""The one error type users see for a bad experiment: raised before any work starts."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad experiment configuration, persona file or run folder.

    The message names the offending field (dotted path) so a user can fix the YAML directly.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")
