"""Errors a user can fix, told apart from failures worth retrying.

``UserError`` (and its kinds ``ConfigError`` and ``BackendError``) means the input is wrong: a
config field, a persona file, a model path, an environment variable, a run folder. Retrying
cannot help, so Prefect tasks do not retry it (``is_retryable``), and the CLI prints it as one
line ``error: <field>: <problem>`` with exit code 2. Anything else is either transient (a server
down: ``ShardFailedError``, retried and resumable) or a bug (a traceback is the right output).
"""

from __future__ import annotations

from typing import Any


def _rebuild(cls: type["UserError"], field: str, message: str, remedy: tuple[str, Any] | None) -> "UserError":
    error = cls.__new__(cls)
    UserError.__init__(error, field, message, remedy=remedy)
    return error


class UserError(Exception):
    """A failure the user can fix; the message names the offending field (dotted path).

    ``remedy`` names a parameter that would resolve it, e.g. ``("overwrite", True)``: the
    Python API reads ``pass overwrite=True``, the CLI ``pass --overwrite`` (``render(cli=True)``).
    """

    def __init__(self, field: str, message: str, *, remedy: tuple[str, Any] | None = None) -> None:
        self.field = field
        self.message = message
        self.remedy = remedy
        super().__init__(self.render())

    def render(self, cli: bool = False) -> str:
        text = f"{self.field}: {self.message}" if self.field else self.message
        if self.remedy is not None:
            name, value = self.remedy
            text += f" or pass --{name.replace('_', '-')}" if cli else f" or pass {name}={value!r}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:  # subclasses change __init__; pickling (Ray, Prefect) must not
        return _rebuild, (type(self), self.field, self.message, self.remedy)


class ConfigError(UserError, ValueError):
    """A bad experiment configuration, persona file or run folder, found before any work starts.

    The message names the offending field (dotted path) so a user can fix the YAML directly.
    """


class ShardFailedError(RuntimeError):
    """Too many of a shard's requests failed in the backend (a server down, say).

    The shard is not written, so re-running the same run id asks those agents again; shards
    already written stay as they are.
    """


def is_retryable(exc: BaseException | None) -> bool:
    """False for failures no retry can fix (``UserError``); True otherwise."""
    return not isinstance(exc, UserError)
