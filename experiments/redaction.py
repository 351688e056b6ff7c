"""Credentials stay out of everything crowdlab stores or logs.

A config may carry a secret where it should not (a key in a base URL ``http://user:KEY@host``,
in ``extra_body`` or under any field named like a key, token, secret or password). ``redact``
returns a copy with those values replaced by ``<redacted>``; that copy is what goes into the
manifest, the logs and Prefect's database. The run itself still needs the real values, so
``seal`` keeps them in this process's memory, and ``unseal`` gives them back to the step
functions: secrets never touch the disk. (``api_key_env``, a variable's name, is the way to pass
a key that survives a restart; see README.)
"""

from __future__ import annotations

import copy
import json
import re
import threading
from typing import Any

REDACTED = "<redacted>"

# Name segments that mark a credential ("api_key", "X-Api-Key", "accessToken", "client_secret").
_SECRET_WORDS = {"key", "apikey", "token", "secret", "password", "passwd", "pwd", "authorization",
                 "auth", "credential", "credentials", "bearer", "cookie", "signature"}
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s?#]+@")
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&](?:[A-Za-z0-9_-]*(?:key|token|secret|password|signature|sig|auth))=)[^&#\s'\"]+", re.I)


def _segments(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)  # camelCase -> camel Case
    return [s for s in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if s]


def is_secret_name(name: str) -> bool:
    """True for field names that hold a credential; ``*_env`` names hold a variable's name instead."""
    parts = _segments(name)
    return bool(parts) and parts[-1] != "env" and any(p in _SECRET_WORDS for p in parts)


def redact_text(text: str) -> str:
    """A string with URL credentials (``user:pass@``, ``?api_key=...``) replaced."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m.group('name')}{REDACTED}", text)


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with credentials replaced (nested dicts and lists too)."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and is_secret_name(k) and value_present(v) else redact(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return redact_text(value)
    return value


def value_present(value: Any) -> bool:
    return value not in (None, "", {}, [])


def has_redactions(value: Any) -> bool:
    return REDACTED in json.dumps(value, default=str)


# --- live values, in this process's memory only ---------------------------------------------

_live: dict[str, Any] = {}
_lock = threading.Lock()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def seal(value: Any) -> Any:
    """``redact(value)``, remembering ``value`` so that ``unseal`` can give it back in this process."""
    public = redact(value)
    if public != value:
        with _lock:
            _live[_canonical(public)] = copy.deepcopy(value)
    return public


def unseal(public: Any) -> Any:
    """The live value sealed as ``public`` in this process, or ``public`` itself when none was."""
    with _lock:
        live = _live.get(_canonical(public))
    return copy.deepcopy(live) if live is not None else public
