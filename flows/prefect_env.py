"""Prefect settings the CLI applies before Prefect is imported (it reads them at import)."""

from __future__ import annotations

import logging
import os
from pathlib import Path


def quiet_prefect(verbose: bool = False) -> None:
    """No analytics (no network here), no per-task INFO lines unless asked, a PREFECT_HOME that exists."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    level = "INFO" if verbose else "WARNING"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", level)
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", level)
    # The temporary server of a run without PREFECT_API_URL gets 20 s to start by default; a busy
    # machine needs longer (seen: "Timed out while attempting to connect to ephemeral ... server").
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # The ephemeral server writes its database and memo file under PREFECT_HOME.
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    home.mkdir(parents=True, exist_ok=True)


class _HideRunFailures(logging.Filter):
    """Drops Prefect's "task/flow run failed" records (each with a traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR
                    and record.name.startswith(("prefect.flow_runs", "prefect.task_runs")))


def hide_run_failures() -> None:
    """The CLI reports a failed run itself, as one line; Prefect's copies of the failure (with
    tracebacks, about 250 lines) stay in its database and UI but leave the terminal.

    Call after Prefect is imported (it configures its handlers then); API handlers keep everything."""
    from prefect.logging.handlers import APILogHandler

    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        for handler in logger.handlers:
            if not isinstance(handler, APILogHandler) and not any(
                    isinstance(f, _HideRunFailures) for f in handler.filters):
                handler.addFilter(_HideRunFailures())
