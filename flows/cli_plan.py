"""`crowdlab plan CONFIG`: calls, tokens, shared prefix, wall time and cost before a run starts;
and the limits `crowdlab run --max-cost/--max-calls` enforce. The work is ``experiments.plan``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from crowdlab.flows.cli_errors import fail

console = Console()


def build_plan(config: Path, overrides: dict[str, Any], runs_root: Path, price_gpu_hour: float | None,
               price_per_mtok: float | None, throughput: Path | None, max_cost: float | None = None,
               max_calls: int | None = None, sample: int = 64) -> Any:
    """The plan of a config, checked against the limits; a ``UserError`` for bad input."""
    from crowdlab import experiments
    from crowdlab.experiments import plan as planning

    price = planning.check_price(price_gpu_hour, price_per_mtok)
    planning.check_limit_values(max_cost, max_calls)
    if max_cost is not None and price is None:
        raise experiments.ConfigError("max_cost", "needs a price: --price-gpu-hour or --price-per-mtok")
    table = planning.load_throughput_table(throughput) if throughput is not None else None
    cfg = experiments.load_config(config, overrides)
    plan = planning.make_plan(cfg, runs_root, throughput=table, price=price, sample=sample)
    planning.check_limits(plan, max_cost, max_calls)
    return plan


def check_run_limits(config: Path, overrides: dict[str, Any], runs_root: Path, max_cost: float | None,
                     max_calls: int | None, price_gpu_hour: float | None, price_per_mtok: float | None,
                     throughput: Path | None) -> None:
    """For `crowdlab run`: refuse (one line, exit 2, nothing written) a run above its limits."""
    if max_cost is None and max_calls is None:  # a price alone limits nothing
        return
    from crowdlab import experiments

    try:
        build_plan(config, overrides, runs_root, price_gpu_hour, price_per_mtok, throughput, max_cost, max_calls)
    except experiments.UserError as exc:
        fail(exc.render(cli=True))


def print_plan(plan: Any) -> None:
    """The plan for people: one row per stage and model, then totals, sources and notes."""
    from crowdlab.experiments.plan import plan_markdown

    head, *_ = plan_markdown(plan).split("\n| stage")
    for line in head.strip().splitlines():
        _print_wrapped(line.lstrip("# "))
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False)
    stages = {s.stage for s in plan.stages}
    table.add_column("model" if len(stages) == 1 else "stage: model", overflow="fold", max_width=26)
    for header in ("calls", "/round", "prompt", "prefix", "output", "wall", "cost"):
        table.add_column(header, justify="right", no_wrap=True)
    for s in plan.stages:
        name = s.model if s.llm else f"{s.model} (no LLM)"
        table.add_row(
            name if len(stages) == 1 else f"{s.stage}: {name}", f"{s.calls:,}", f"{s.calls_per_round:,}",
            "" if s.prompt_tokens_per_call is None else f"{s.prompt_tokens_per_call:.0f}",
            "" if s.shared_prefix_share is None else f"{s.shared_prefix_share:.0%}",
            "" if s.output_tokens_per_call is None else
            f"{s.output_tokens_per_call:.0f}{'' if s.output_tokens_source == 'measured' else ' cap'}",
            _seconds(s.wall_s), "" if s.cost is None else f"{s.cost:,.4f}" if s.cost < 1 else f"{s.cost:,.2f}")
    console.print(table)
    _print_wrapped("prompt/output: tokens per call (model's own tokenizer); prefix: share of the prompt "
                   "every call shares (prefix caching)")
    tail = plan_markdown(plan).split("\n\n")[-1]
    for line in tail.strip().splitlines():
        _print_wrapped(line)


def _print_wrapped(line: str) -> None:
    """One line of the plan folded at the terminal's width (80 when piped), a list item's
    continuation indented under its text; words and paths are never split."""
    import textwrap

    text = textwrap.fill(line, width=max(console.width, 40), subsequent_indent="  " if line.startswith("- ") else "",
                         break_long_words=False, break_on_hyphens=False)
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def _seconds(value: float | None) -> str:
    from crowdlab.experiments.plan import _fmt_s

    return _fmt_s(value)


def plan_command(
    config: Path = typer.Argument(..., help="Experiment config (YAML)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field: --set rounds=2 --set population.n=500."),
    runs_root: Path = typer.Option(Path("data/runs"), "--runs-root",
                                   help="Where earlier runs are: their manifests and shard files give the throughput."),
    price_gpu_hour: Optional[float] = typer.Option(None, "--price-gpu-hour", help="Price of one GPU-hour of an engine."),
    price_per_mtok: Optional[float] = typer.Option(None, "--price-per-mtok", help="Price per million tokens (prompt + output)."),
    throughput: Optional[Path] = typer.Option(None, "--throughput", help="Throughput table (YAML): "
                                              "models: {<model>: {decisions_per_s: .., backgrounds_per_s: .., "
                                              "startup_s: ..}} (backgrounds_per_s: personas per second)."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="Fail (exit 2) when the plan costs more."),
    max_calls: Optional[int] = typer.Option(None, "--max-calls", help="Fail (exit 2) when the plan makes more LLM calls."),
    sample: int = typer.Option(64, "--sample", min=1, help="Prompts rendered and tokenised per condition and round."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Print what a run would do and cost, before anything runs (nothing is written)."""
    from crowdlab import experiments
    from crowdlab.flows.cli import _parse_overrides

    try:
        plan = build_plan(config, _parse_overrides(set_), runs_root, price_gpu_hour, price_per_mtok, throughput,
                          max_cost, max_calls, sample)
    except experiments.UserError as exc:
        fail(exc.render(cli=True))
    if as_json:
        typer.echo(plan.model_dump_json(indent=2))
    else:
        print_plan(plan)
