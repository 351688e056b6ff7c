"""`crowdlab personas ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="Sample and inspect persona populations.", no_args_is_help=True)
