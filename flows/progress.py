"""In-process progress listeners: how a flow running in this process moves the CLI's bar."""

from __future__ import annotations

from collections.abc import Callable

ProgressListener = Callable[[int, int], None]  # (done, total)
_listeners: list[ProgressListener] = []


def add_progress_listener(listener: ProgressListener) -> None:
    _listeners.append(listener)


def remove_progress_listener(listener: ProgressListener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def notify(done: int, total: int) -> None:
    for listener in list(_listeners):
        listener(done, total)
