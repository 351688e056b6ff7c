"""The `crowdlab` command line. Prints for people; the library underneath only logs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from crowdlab.flows.cli_errors import OneLineErrors, fail
from crowdlab.flows.cli_models import app as models_app
from crowdlab.flows.cli_personas import app as personas_app
from crowdlab.flows.cli_plan import check_run_limits, plan_command
from crowdlab.flows.cli_report import narrow_table, print_conditions, print_field_rounds, report
from crowdlab.flows.cli_show import show_command
from crowdlab.flows.prefect_env import hide_run_failures, quiet_prefect
from crowdlab.flows.progress import add_progress_listener, remove_progress_listener
from crowdlab.flows.quiet import quiet_libraries
from crowdlab.flows.run_status import resume_message

DEMO_CONFIG = Path("experiments/configs/demo.yaml")

app = typer.Typer(
    name="crowdlab",
    help="Very large LLM-agent simulations as reproducible experiments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=OneLineErrors,  # usage errors: one line `error: <param>: <problem>`, exit 2
)
app.add_typer(personas_app, name="personas")
app.add_typer(models_app, name="models")
app.command("report")(report)
app.command("plan")(plan_command)
app.command("show")(show_command)
# The terminal's width, or $COLUMNS, or 80 when piped (CI logs, `make demo | tee`): the round table
# is narrow enough for 80 columns.
console = Console()


@app.callback()
def _configure(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show library and Prefect logs.")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--set")
        overrides[key.strip()] = yaml.safe_load(value)  # "2" -> 2, "[P1, P2]" -> list
    return overrides


def _print_rounds(run_dir: Path) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from crowdlab.analysis import load
    from crowdlab.analysis.fields import is_beauty_contest
    from crowdlab.analysis.plots import run_facets

    data = load(run_dir)
    if not is_beauty_contest(data):  # any other game: its primary answer field per round
        console.print(f"rounds of {run_dir}", highlight=False, markup=False)
        print_field_rounds(console, data)
        return
    rounds = pq.read_table(run_dir / "rounds.parquet")
    rounds = rounds.filter(pc.equal(rounds["group"], -1)).to_pylist()
    console.print(f"rounds of {run_dir}", highlight=False, markup=False)
    print_conditions(console, run_facets(run_dir).labels)
    table = narrow_table("cond", "rep", "round", "n", "invalid", "mean", "median", "std", "target", "winner")
    fmt = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
    for r in rounds:
        table.add_row(r["condition_id"], str(r["replicate"]), str(r["round"]), str(r["n"]), str(r["n_invalid"]),
                      fmt(r["mean"]), fmt(r["median"]), fmt(r["std"]), fmt(r["target"]), fmt(r["winning_value"]))
    console.print(table)
    _print_rounds_by_model(run_dir)


def _print_rounds_by_model(run_dir: Path) -> None:
    """Mixed-model runs: the same rounds once per model (the game's target is the pooled one above)."""
    import pyarrow.dataset as ds

    if len(ds.dataset(run_dir / "decisions", format="parquet").to_table(columns=["model"])
           .column("model").unique()) < 2:
        return
    from crowdlab.analysis import breakdown

    rows = breakdown(run_dir, "model", by=("condition_id", "replicate", "round"))
    console.print("rounds by model", highlight=False, markup=False)
    table = narrow_table("cond", "rep", "round", "model", "n", "invalid", "mean", "median", "std",
                         left=("cond", "model"))
    fmt = lambda v: "" if v != v else f"{v:.2f}"  # noqa: E731  (NaN when a model has no valid answer)
    for r in rows.itertuples(index=False):
        table.add_row(str(r.condition_id), str(r.replicate), str(r.round), str(r.model), str(r.n),
                      str(r.n - r.n_valid), fmt(r.mean), fmt(r.median), fmt(r.std))
    console.print(table)


def _run(config: Path, run_id: Optional[str], runs_root: Path, overwrite: bool, overrides: dict[str, Any],
         use_prefect: bool, verbose: bool, report: bool = False) -> tuple[Path, Optional[Path]]:
    """Run through Prefect or in-process; (run folder, report written inside the flow or None).

    Every failure the user can fix (``UserError``) is one line on stderr, exit code 2, with or
    without Prefect; a run stopped by its backend is one line, exit code 1."""
    from crowdlab import experiments
    from crowdlab.experiments.redaction import seal

    try:
        # Every check before starting Prefect, so bad input fails in a second with one clean line.
        checked = experiments.preflight(experiments.load_config(config, overrides), run_id, runs_root, overwrite)
    except experiments.UserError as exc:
        fail(exc.render(cli=True))
    resuming = resume_message(checked, run_id, runs_root)  # "nothing to do: 24/24 shards done"
    if resuming:
        console.print(resuming, highlight=False, markup=False)

    progress = Progress(TextColumn("shards"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=True)
    task_id = progress.add_task("shards", total=None)

    def on_progress(done: int, total: int) -> None:
        progress.update(task_id, completed=done, total=total)

    try:
        with progress:
            if use_prefect:
                quiet_prefect(verbose)
                from crowdlab.flows import pipeline

                if not verbose:
                    hide_run_failures()
                add_progress_listener(on_progress)
                try:
                    # seal: credentials in --set values stay in memory, out of Prefect's database
                    if checked.population.backgrounds is not None:  # population -> experiment -> analysis
                        outcome = pipeline.pipeline_flow(str(config), run_id=run_id, runs_root=str(runs_root),
                                                         overwrite=overwrite, overrides=seal(overrides) or None)
                    else:
                        outcome = pipeline.experiment_flow(str(config), run_id=run_id, runs_root=str(runs_root),
                                                           overwrite=overwrite, overrides=seal(overrides) or None,
                                                           report=report)
                finally:
                    remove_progress_listener(on_progress)
                run_dir = Path(outcome["run_dir"])
                report_path = Path(outcome["report"]) if outcome.get("report") else None
            else:
                cfg = experiments.load_config(config, overrides)
                run_dir = experiments.run(cfg, run_id=run_id, runs_root=runs_root, overwrite=overwrite,
                                          progress=on_progress).run_dir  # backgrounds first, when asked
                report_path = None
                if cfg.population.backgrounds is not None:  # the pipeline's analysis stage
                    from crowdlab.analysis import write_report

                    report_path = write_report(run_dir)
    except experiments.UserError as exc:
        fail(exc.render(cli=True))
    except experiments.ShardFailedError as exc:
        fail(f"run stopped: {exc}", code=1)
    _print_rounds(run_dir)
    console.print(f"run folder: {run_dir}")
    return run_dir, report_path


@app.command("run")
def run_command(
    config: Path = typer.Argument(..., help="Experiment config (YAML)."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Run id; an existing id with the same config resumes."),
    runs_root: Path = typer.Option(Path("data/runs"), "--runs-root", help="Folder that holds <experiment>/<run_id>/."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run id with a different config."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field: --set rounds=2 --set population.n=500."),
    prefect: bool = typer.Option(True, "--prefect/--no-prefect", help="Run as a Prefect flow (default) or in-process."),
    report_: bool = typer.Option(False, "--report", help="Write the HTML report when the run finishes."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs."),
    fresh_seed: bool = typer.Option(
        False, "--fresh-seed", help="Start a new, independent replicate: a new run id (replicate-<UTC time>-<random> "
                                    "unless --run-id) and a run seed derived from it."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="Refuse to start when `crowdlab plan` costs more "
                                             "(with --price-gpu-hour or --price-per-mtok)."),
    max_calls: Optional[int] = typer.Option(None, "--max-calls", help="Refuse to start above this many LLM calls."),
    price_gpu_hour: Optional[float] = typer.Option(None, "--price-gpu-hour", help="Price of one engine GPU-hour (for --max-cost)."),
    price_per_mtok: Optional[float] = typer.Option(None, "--price-per-mtok", help="Price per million tokens (for --max-cost)."),
    throughput: Optional[Path] = typer.Option(None, "--throughput", help="Throughput table (YAML) for --max-cost."),
) -> None:
    """Run (or resume) an experiment and print its round table."""
    # Under Prefect the flow writes the report and links it as an artifact of the run.
    overrides = _parse_overrides(set_)
    if fresh_seed:  # the mechanism of the deployment's fresh_seed parameter (the nightly replicate)
        from crowdlab.experiments.config import fresh_replicate

        run_id, overrides = fresh_replicate(run_id, overrides)
    check_run_limits(config, overrides, runs_root, max_cost, max_calls, price_gpu_hour, price_per_mtok, throughput)
    run_dir, written = _run(config, run_id, runs_root, overwrite, overrides, prefect, verbose, report_)
    if report_ or written:
        from crowdlab.analysis import write_report

        console.print(f"report: {written or write_report(run_dir)}")


@app.command("demo")
def demo_command(
    runs_root: Path = typer.Option(Path("data/runs"), "--runs-root", help="Where the demo run goes."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs."),
) -> None:
    """The main job on its embedded defaults: personas -> 4-round beauty contest (Prefect) -> report."""
    if not DEMO_CONFIG.is_file():
        fail(f"config: {DEMO_CONFIG} not found: run the demo from the crowdlab checkout")
    _, written = _run(DEMO_CONFIG, "demo", runs_root, True, {}, True, verbose, report=True)
    console.print(f"report: {written}")


@app.command("ui")
def ui_command(
    port: int = typer.Option(4200, "--port", help="Port of the local Prefect server (127.0.0.1)."),
) -> None:
    """Start a local Prefect server + UI, register crowdlab's deployments and a worker; Ctrl-C stops all."""
    import time

    from crowdlab.flows.ui import UIError, local_stack, ui_prefect_home

    if not Path("prefect.yaml").is_file():
        console.print("[red]error:[/red] prefect.yaml not found: run `crowdlab ui` from the crowdlab checkout")
        raise typer.Exit(code=2)
    import signal

    # Ctrl-C and `kill` both stop the server and worker too (a background job starts with SIGINT
    # ignored, so restore Python's handler; SIGTERM becomes a clean exit through the finally).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    console.print("starting the Prefect server, registering deployments and a worker ...")
    try:
        with local_stack(Path.cwd(), port=port) as url:
            console.print(f"Prefect UI: [bold]{url}[/bold]  (Deployments -> experiment -> Run)")
            console.print(f"logs: data/ui-logs/   database: {ui_prefect_home(Path.cwd())}   stop with Ctrl-C",
                          highlight=False, soft_wrap=True)
            console.print("to send `crowdlab run` to this server, in another shell:", highlight=False)
            console.print(f"export PREFECT_API_URL={url}/api", highlight=False, soft_wrap=True, markup=False)
            while True:
                time.sleep(1)
    except UIError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        console.print("stopped")


def main() -> None:
    # vLLM and torch read their log settings at import, in every subprocess too: keep their
    # warnings out of normal output before anything imports them (they still show with -v).
    quiet_libraries(verbose=any(arg in ("-v", "--verbose") for arg in sys.argv[1:]))
    app()


if __name__ == "__main__":
    main()
