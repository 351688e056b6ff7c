"""Prefect settings the CLI applies before Prefect is imported (it reads them at import)."""

from __future__ import annotations

import os
from pathlib import Path


def quiet_prefect(verbose: bool = False) -> None:
    """No analytics (no network here), no per-task INFO lines unless asked, a PREFECT_HOME that exists."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    level = "INFO" if verbose else "WARNING"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", level)
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", level)
    # The ephemeral server writes its database and memo file under PREFECT_HOME.
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
