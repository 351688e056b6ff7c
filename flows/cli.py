"""The `crowdlab` command line. Prints for people; the library underneath only logs."""

from __future__ import annotations

import logging

import typer

from crowdlab.flows.cli_personas import app as personas_app

app = typer.Typer(
    name="crowdlab",
    help="Very large LLM-agent simulations as reproducible experiments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(personas_app, name="personas")


@app.callback()
def _configure(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library logs.")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
