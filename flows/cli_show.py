"""`crowdlab show RUN --agent 17 --round 3`: what one agent saw (the chat it was sent, from the
prompt audit trail) and what it answered. Thin: the lookup is crowdlab.analysis.prompts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from crowdlab.flows.cli_errors import fail


def _value(v: object) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:g}"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return "" if v is None else str(v)


def show_command(
    run: Path = typer.Argument(..., help="Run folder."),
    agent: int = typer.Option(..., "--agent", help="Agent id (joins the persona table)."),
    round_: int = typer.Option(..., "--round", help="Round (1-based)."),
    condition: Optional[str] = typer.Option(None, "--condition", help="Condition id (needed when the run has several)."),
    replicate: Optional[int] = typer.Option(None, "--replicate", help="Replicate (needed when the run has several)."),
) -> None:
    """Print the prompt one agent was sent in one round and its answer."""
    from crowdlab.analysis import RunFolderError, load
    from crowdlab.analysis.prompts import show_decision

    try:
        shown = show_decision(load(run), agent, round_, condition_id=condition, replicate=replicate)
    except (RunFolderError, KeyError, ValueError) as exc:
        fail(f"show: {str(exc).strip(chr(34) + chr(39))}")
    typer.echo(f"run {shown.run_id}  condition {shown.condition_id}  replicate {shown.replicate}  "
               f"round {shown.round}  agent {shown.agent_id}")
    typer.echo(f"model {shown.model}  seed {shown.seed}  prompt {shown.prompt_hash or '-'}")
    if shown.note:
        typer.echo(shown.note)
    for message in shown.messages:
        typer.echo(f"\n--- {message['role']} ---")
        typer.echo(message["content"].rstrip("\n"))
    typer.echo("\n--- answer ---")
    typer.echo(shown.text if shown.text is not None else "(no text)")
    typer.echo(f"\nvalid: {'yes' if shown.valid else 'no'}" + (f"  error: {shown.error}" if shown.error else ""))
    for name, v in shown.answers.items():
        cause = shown.answer_errors.get(name)
        typer.echo(f"  {name}: {_value(v)}" + (f"  ({cause})" if cause else ""))
    if not shown.answers and shown.value is not None:
        typer.echo(f"  value: {_value(shown.value)}")
