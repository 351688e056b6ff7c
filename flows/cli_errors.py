"""How every `crowdlab` command reports a mistake: one line on stderr, ``error: <field>: <problem>``.

Typer draws usage errors (``-n ten``, ``--seed 1.5``, a missing option) as a five-line box; the
``OneLineErrors`` group prints them as one line naming the parameter, exit code 2, for every
command and sub-command of the app that uses it. ``fail`` does the same for errors found by the
library (``UserError``): plain text, never wrapped, no rich markup, so ``[low, high]`` survives.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn, Sequence

import typer
from typer.core import TyperGroup

# typer >= 0.25 ships its own copy of click; its exception classes are the ones raised.
try:
    from typer._click import exceptions as click
except ImportError:  # pragma: no cover - typer before it vendored click
    import click  # type: ignore[no-redef]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr and exit with ``code``."""
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(code=code)


def _problem(text: str) -> str:
    return " ".join(text.split()).rstrip(".")


def usage_message(exc: Any) -> str:
    """``<param>: <problem>`` for a click/typer usage error (parameter name as the code spells it)."""
    if isinstance(exc, click.MissingParameter) and exc.param is not None:
        opts = [o for o in getattr(exc.param, "opts", []) if o.startswith("-")]
        flags = " / ".join(opts) if opts else f"the {str(exc.param.name).upper()} argument"
        return f"{exc.param.name}: missing; give {flags}"
    if isinstance(exc, click.BadParameter) and exc.param is not None:
        return f"{exc.param.name}: {_problem(exc.message)}"
    if isinstance(exc, click.BadParameter) and isinstance(exc.param_hint, str):
        return f"{exc.param_hint.lstrip('-').replace('-', '_')}: {_problem(exc.message)}"
    if isinstance(exc, click.NoSuchOption):
        return f"{exc.option_name}: {_problem(exc.format_message())}"
    return f"usage: {_problem(exc.format_message())}"


class OneLineErrors(TyperGroup):
    """A typer group whose usage errors are one line on stderr (exit code 2), not a box."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.NoArgsIsHelpError as exc:
            exc.show()  # bare `crowdlab`: the help text is the answer
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            typer.echo(f"error: {usage_message(exc)}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)
