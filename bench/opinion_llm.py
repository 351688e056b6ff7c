"""The opinion experiment with SmolLM2 on CPU, end to end (issue 15's target: 300 agents x 3
rounds): experiments/configs/opinion_llm.yaml with its language-model condition served by the
shipped CPU backend (experiments/configs/backends/smollm2_cpu.yaml), beside the bounded-confidence
baseline on the same network unless ``--no-baseline``.

Each round every agent reads its in-neighbours' stances and at most k of their posts, writes a
short post and gives its stance, as JSON under the answer schema (structured output). Posts are
capped twice: the message field's ``maxLength`` (``--max-chars``, the config's
``scenario.messages.max_chars``) and the sampling ``max_tokens`` (``--max-tokens``).

Printed: engine start and run wall time (the engine is warmed before the timed run), LLM
decisions/s over the run wall and over engine busy time, the valid-answer share, posts written and
their mean length, output tokens per decision, and the stance trajectory per round and condition
(mean, variance, share changed). Timing on a shared machine is disturbed by other work: the load
average is printed beside it.

Usage: .venv/bin/python bench/opinion_llm.py [--agents 300] [--rounds 3] [--max-chars N]
       [--max-tokens N] [--shard-size N] [--no-baseline] [--keep DIR]
       [--config experiments/configs/opinion_llm.yaml]
       [--backend experiments/configs/backends/smollm2_cpu.yaml] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds
import yaml

from crowdlab.experiments import close_backends, run
from crowdlab.experiments.config import apply_overrides, validate_config
from crowdlab.experiments.design import expand_design
from crowdlab.experiments.errors import ConfigError, UserError
from crowdlab.experiments.run_context import get_backend

CONFIG = Path("experiments/configs/opinion_llm.yaml")
BACKEND = Path("experiments/configs/backends/smollm2_cpu.yaml")


def _yaml(path: Path, field: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(field, f"file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ConfigError(field, f"{path} does not hold a mapping")
    return data


def experiment(args: argparse.Namespace) -> dict[str, Any]:
    """The experiment config: the shipped file, its vLLM backends replaced by ``--backend``, the
    sizes and caps of the command line, then ``--set`` overrides."""
    cfg = _yaml(Path(args.config), "--config")
    llm = _yaml(Path(args.backend), "--backend")
    factors = (cfg.get("design") or {}).get("factors") or {}
    levels = factors.get("backend")
    if levels is not None:
        levels = [dict(llm, label=level.get("label", llm.get("label"))) if level.get("kind") == "vllm" else level
                  for level in levels if level.get("kind") == "vllm" or not args.no_baseline]
        factors["backend"] = levels
        if len(levels) == 1:  # one level left: no factor
            del factors["backend"]
            cfg["backend"] = levels[0]
    if cfg.get("backend", {}).get("kind") == "vllm":
        cfg["backend"] = dict(llm, label=cfg["backend"].get("label", llm.get("label")))
    overrides: dict[str, Any] = {"population.n": args.agents, "rounds": args.rounds,
                                 "shard_size": args.shard_size or args.agents}
    if args.max_chars is not None:
        overrides["scenario.messages.max_chars"] = args.max_chars
    if args.max_tokens is not None:
        overrides["sampling.max_tokens"] = args.max_tokens
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError("--set", f"expected KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    return apply_overrides(copy.deepcopy(cfg), overrides)


def warm(cfg: dict[str, Any]) -> tuple[float, list[str]]:
    """Start the language-model engines the run will use (same settings, so the run reuses them);
    returns the seconds it took and the labels of the LLM models."""
    config = validate_config(cfg)
    t = time.perf_counter()
    labels: list[str] = []
    for cond in expand_design(config):
        for label, settings, _ in cond.config.model_shares():
            if settings.kind == "vllm" and label not in labels:
                getattr(get_backend(settings), "engine", None)  # vLLM starts its engine lazily
                labels.append(label)
    return time.perf_counter() - t, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-chars", type=int, default=None, help="post cap (default: the config's, 80)")
    ap.add_argument("--max-tokens", type=int, default=None, help="sampling cap (default: the config's, 48)")
    ap.add_argument("--shard-size", type=int, default=None, help="agents per shard (default: all in one)")
    ap.add_argument("--no-baseline", action="store_true", help="run the language model only")
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--backend", default=str(BACKEND), help="backend YAML that serves the vLLM condition")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="experiment config override")
    ap.add_argument("--keep", default=None, metavar="DIR", help="write the run under DIR and keep it")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name, value in (("--agents", args.agents), ("--rounds", args.rounds)):
        if value <= 0:
            print(f"error: {name}: must be > 0, got {value}", file=sys.stderr)
            sys.exit(2)

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="crowdlab-opinion-llm-"))
    try:
        cfg = experiment(args)
        start_s, labels = warm(cfg)
        load_before = os.getloadavg()[0]
        t = time.perf_counter()
        result = run(cfg, run_id=f"bench-{args.agents}x{args.rounds}", runs_root=root)
        wall = time.perf_counter() - t
        load_after = os.getloadavg()[0]
        report(result, cfg, labels, start_s, wall, (load_before, load_after))
    except UserError as exc:
        print(f"error: {exc.render(cli=True)}", file=sys.stderr)
        sys.exit(2)
    finally:
        close_backends()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def report(result: Any, cfg: dict[str, Any], labels: list[str], start_s: float, wall: float,
           load: tuple[float, float]) -> None:
    run_dir = result.run_dir
    decisions = ds.dataset(run_dir / "decisions", format="parquet").to_table(
        columns=["condition_id", "round", "agent_id", "model", "valid", "value"]).to_pandas()
    posts = ds.dataset(run_dir / "messages", format="parquet").to_table().to_pandas() \
        if (run_dir / "messages").is_dir() else None
    msgs = (cfg.get("scenario") or {}).get("messages") or {}
    print(f"run: {result.n_decisions:,} decisions ({cfg['population']['n']} agents x {cfg['rounds']} rounds x "
          f"{decisions['condition_id'].nunique()} conditions), posts capped at {msgs.get('max_chars')} characters and "
          f"{(cfg.get('sampling') or {}).get('max_tokens')} tokens; {run_dir}")
    print(f"engine start {start_s:.1f} s (before the timed run); run wall {wall:.1f} s; "
          f"load average {load[0]:.1f} -> {load[1]:.1f} on {os.cpu_count()} cores (shared machine: timings disturbed)")
    for label in labels:
        mine = decisions[decisions["model"] == label]
        cids = sorted(mine["condition_id"].unique())
        t = result.throughput.get(label, {})
        busy = t.get("engine_busy_s") or 0.0
        print(f"{label} ({', '.join(cids)}): {len(mine):,} decisions, {len(mine) / wall:.1f} decisions/s over the run "
              f"wall, {len(mine) / busy if busy else float('nan'):.1f}/s over engine busy time ({busy:.1f} s); "
              f"valid answers {mine['valid'].mean():.3f}; output tokens per decision "
              f"{t.get('output_tokens', 0) / max(len(mine), 1):.1f}; prefix-cache hit rate "
              f"{t.get('prefix_cache_hit_rate')}")
        if posts is not None:
            written = posts[posts["condition_id"].isin(cids)]
            lengths = written["text"].str.len()
            print(f"  posts: {len(written):,} written ({len(written) / max(len(mine), 1):.3f} per decision), mean "
                  f"length {lengths.mean():.1f} characters (max {lengths.max() if len(written) else 0})")
            for text in written.sort_values(["round", "sender"])["text"].head(3):
                print(f"    e.g. {text!r}")
    rounds = result.rounds()
    rounds = rounds.filter(pc.equal(rounds["group"], -1)).to_pandas().sort_values(["condition_id", "round"])
    label_of = decisions.groupby("condition_id")["model"].first()
    rounds.insert(1, "model", rounds["condition_id"].map(label_of))
    cols = ["condition_id", "model", "round", "n_valid", "mean", "outcome_variance", "outcome_changed_share",
            "outcome_assortativity"]
    print("stance per round (valid answers):")
    print(rounds[[c for c in cols if c in rounds]].rename(columns=lambda c: c.removeprefix("outcome_"))
          .to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
