"""`crowdlab personas ...` commands: sample a spec to Parquet, describe a sampled file.

Printing lives here; sampling and the target-vs-realised comparison are library calls
(`crowdlab.personas.sample_rows`, `crowdlab.personas.describe`). A bad spec or argument prints
one clean line naming the field and exits with code 2, before anything is written.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from crowdlab.experiments.errors import ConfigError, UserError
from crowdlab.experiments.prepare import check_writable
from crowdlab.flows.cli_errors import OneLineErrors, fail
from crowdlab.personas import SpecError, describe, load_spec, read_personas, read_spec_info, write_personas
from crowdlab.personas.sampling.sampler import check_quotas, check_request, sample_rows, warn_departures

app = typer.Typer(help="Sample and inspect persona populations.", no_args_is_help=True, cls=OneLineErrors)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> None:
    fail(message)


def _check_out(out: Path) -> None:
    """The output can be written (checked before sampling, not after)."""
    try:
        check_writable(out, field="out")
    except ConfigError as exc:
        raise SpecError("out", exc.message) from None


@app.command("sample")
def sample_command(
    spec_path: Path = typer.Argument(..., help="Population spec (YAML)."),
    n: int = typer.Option(..., "-n", "--n", help="Number of personas."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same table)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output Parquet file."),
    chunk_size: int = typer.Option(200_000, "--chunk-size", help="Rows sampled per step."),
) -> None:
    """Sample N personas from SPEC into a Parquet file (written atomically)."""
    try:
        spec = load_spec(spec_path)
        check_request(n, seed)
        check_quotas(spec, n)
        if chunk_size <= 0:
            raise SpecError("chunk-size", f"must be positive, got {chunk_size}")
        _check_out(out.parent)
    except SpecError as exc:
        _fail(str(exc))
        return
    steps = math.ceil(n / chunk_size)
    parts: list[pa.Table] = []
    with Progress(
        TextColumn("sampling {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=steps < 2,
    ) as progress:
        task = progress.add_task(spec.name, total=n)
        for start in range(0, n, chunk_size):
            stop = min(n, start + chunk_size)
            parts.append(sample_rows(spec, start, stop, seed, n))
            progress.update(task, advance=stop - start)
    table = pa.concat_tables(parts)
    warn_departures(spec, table)  # targets the constraints make unreachable: target, attainable, realised
    path = write_personas(table, out, spec=spec, seed=seed)
    console.print(f"wrote {table.num_rows:,} personas of {spec.name} (seed {seed}) to {path}", highlight=False, soft_wrap=True)


def _fmt(value: float | None, share: bool) -> str:
    if value is None:
        return "-"
    if share:
        return f"{value:.2%}"
    return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"


@app.command("describe")
def describe_command(
    path: Path = typer.Argument(..., help="Persona Parquet file written by `crowdlab personas sample`."),
    spec_path: Path = typer.Option(None, "--spec", help="Compare with this spec instead of the one stored in the file."),
) -> None:
    """Print each attribute's realised distribution next to its target, with a fit figure."""
    try:
        if not path.exists():
            raise SpecError("path", f"{path} does not exist")
        spec = load_spec(spec_path) if spec_path is not None else read_spec_info(path).spec
        if spec is None:
            raise SpecError("path", f"{path} carries no spec; pass --spec")
        fit = describe(read_personas(path), spec)
    except SpecError as exc:
        _fail(str(exc))
        return
    console.print(f"[bold]{fit.spec_name}[/]: {fit.n:,} personas", highlight=False)
    summary = Table("attribute", "kind", "fit (TVD)", "note", title="fit per attribute")
    for attr in fit.attributes:
        summary.add_row(attr.name, attr.kind, "-" if attr.tvd is None else f"{attr.tvd:.4f}", attr.note)
    console.print(summary)
    for attr in fit.attributes:
        detail = Table("value", "target", "realised", title=f"{attr.name} ({attr.kind})")
        for row in attr.rows:
            detail.add_row(row.label, _fmt(row.target, row.share), _fmt(row.realised, row.share))
        console.print(detail)
    for attr in fit.flagged:  # constraints that keep an attribute from its target
        console.print(f"flag: {attr.name}: {attr.flag}", markup=False, highlight=False)
        if attr.departure:
            cells = Table("cell", "target", "attainable", "realised", title=f"{attr.name} under the constraints")
            for c in attr.departure:
                cells.add_row(c.label, _fmt(c.target, True), _fmt(c.attainable, True), _fmt(c.realised, True))
            console.print(cells)


def _read_backend(path: Path | None) -> dict | None:
    if path is None:
        return None
    import yaml

    from crowdlab.yaml_io import safe_load

    try:
        data = safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError("backend", f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or "kind" not in data:
        raise SpecError("backend", f"{path} must be a mapping with a kind (vllm, openai, transformers, echo)")
    return data


@app.command("generate")
def generate_command(
    spec_path: Path = typer.Argument(..., help="Population spec (YAML), optionally with a background section."),
    n: int = typer.Option(..., "-n", "--n", help="Number of personas."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same table and texts)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (shards/, personas.parquet, manifest.json)."),
    backend_path: Path = typer.Option(None, "--backend", help="Backend config YAML for backgrounds (overrides the spec's)."),
    shard_size: int = typer.Option(10_000, "--shard-size", help="Personas per shard (one Prefect task each)."),
    local: bool = typer.Option(False, "--local", help="Run without Prefect (same files)."),
) -> None:
    """Generate N personas (with backgrounds) into OUT as a resumable Prefect flow, one task per shard."""
    from crowdlab.personas.backgrounds import generate as gen

    try:
        spec = load_spec(spec_path)
        backend = _read_backend(backend_path)
        _check_out(out)
        plan = gen.plan_generation(spec, n, seed, out, shard_size, backend)  # every check before work starts
    except SpecError as exc:
        _fail(str(exc))
        return
    with Progress(
        TextColumn("generating {task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("shards"),
        TimeRemainingColumn(), console=err_console, transient=True,
    ) as progress:
        bar = progress.add_task(spec.name, total=len(plan.bounds))

        def on_shard(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        if local:
            from crowdlab.flows.personas_flow import run_local

            try:
                path = run_local(spec_path, n, seed, out, shard_size, plan.backend_config, on_shard)
            except (UserError, SpecError) as exc:
                fail(str(exc))
        else:
            from crowdlab.flows.prefect_env import quiet_prefect

            quiet_prefect()
            from crowdlab.flows import personas_flow as pf
            from crowdlab.flows.progress import add_progress_listener, remove_progress_listener

            from crowdlab.flows.prefect_env import hide_run_failures

            hide_run_failures()
            add_progress_listener(on_shard)
            try:
                path = Path(pf.personas_flow(str(spec_path), n, seed, str(out), shard_size, plan.backend_config))
            except (UserError, SpecError) as exc:  # one line, as without Prefect
                fail(str(exc))
            finally:
                remove_progress_listener(on_shard)
    console.print(f"wrote {n:,} personas of {spec.name} (seed {seed}) to {path}", highlight=False, soft_wrap=True)
    from crowdlab.personas.sampling.io import read_personas as _read

    table = _read(path)
    if "background_consistent" in table.column_names:
        from crowdlab.personas.backgrounds.write import contradiction_rates

        rates = contradiction_rates(table)
        console.print(
            f"backgrounds: contradiction rate {rates['before_regeneration']:.1%} before regeneration, "
            f"{rates['after_regeneration']:.1%} after (flagged, kept); empty {rates['empty']:.1%}",
            highlight=False,
        )


@app.command("report")
def report_command(
    population: Path = typer.Argument(..., help="A folder from `personas generate` or a persona Parquet file."),
    out: Path = typer.Option(None, "-o", "--out", help="Folder for report_card.json/.html (default: beside the table)."),
    spec_path: Path = typer.Option(None, "--spec", help="Compare with this spec instead of the one stored in the file."),
) -> None:
    """Write the population report card (fit, coverage, names, background duplicates) as HTML and JSON."""
    from crowdlab.personas.report.card import write_report_card

    path = population / "personas.parquet" if population.is_dir() else population
    try:
        if not path.exists():
            raise SpecError("population", f"{path} does not exist")
        spec = load_spec(spec_path) if spec_path is not None else read_spec_info(path).spec
        if spec is None:
            raise SpecError("population", f"{path} carries no spec; pass --spec")
    except SpecError as exc:
        _fail(str(exc))
        return
    target = out or path.parent
    card = write_report_card(read_personas(path), target, spec)
    console.print(f"[bold]{card['spec']}[/]: {card['n']:,} personas, largest TVD {card['max_tvd']:.4f}", highlight=False)
    if "backgrounds" in card:
        b = card["backgrounds"]
        console.print(
            f"backgrounds: exact duplicates {b['exact_duplicate_rate']:.3%}, near duplicates {b['near_duplicate_rate']:.3%}, "
            f"distinct-2 {b['distinct']['distinct_2']:.3f}, contradiction rate {b['contradiction_rate'].get('after_regeneration', float('nan')):.1%}",
            highlight=False,
        )
    console.print("stages: " + ", ".join(f"{k} {v:.2f}s" for k, v in card["stages_s"].items()), highlight=False, soft_wrap=True)
    console.print(f"wrote {target / 'report_card.html'} and {target / 'report_card.json'}", highlight=False, soft_wrap=True)
