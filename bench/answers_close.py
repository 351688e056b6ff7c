"""Do SmolLM2's answers always close? Invalid answers by cause over the prompt variants.

Runs ``--agents`` agents for ``--rounds`` rounds per variant through crowdlab's vLLM path with
the shipped sampling settings (``max_tokens`` 256 unless given) and the shipped CPU backend file,
and prints per variant the invalid answers by cause (unparseable, out_of_range, truncated,
backend_error), output tokens per answer and the longest answer in tokens against the
scenario's bound (``max_answer_tokens``).

Usage: .venv/bin/python bench/answers_close.py [--agents 50] [--rounds 1] [--variants P1,P2,P3,P4]
       [--memory numbers] [--backend experiments/configs/backends/smollm2_cpu.yaml] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
import yaml

from crowdlab.experiments import close_backends, run
from crowdlab.experiments.config import SamplingConfig
from crowdlab.experiments.scenarios import BeautyContest, BeautyContestParams
from crowdlab.experiments.schema import INVALID_CAUSES
from crowdlab.personas import load_spec, sample, write_personas

SPEC = "data/populations/general_adult.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--variants", default="P1,P2,P3,P4")
    ap.add_argument("--memory", default="numbers", choices=["none", "numbers", "reasoning"])
    ap.add_argument("--max-tokens", type=int, default=SamplingConfig().max_tokens)
    ap.add_argument("--backend", default="experiments/configs/backends/smollm2_cpu.yaml")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print("command: .venv/bin/python bench/answers_close.py " + shlex.join(sys.argv[1:]))
    backend = yaml.safe_load(Path(args.backend).read_text(encoding="utf-8"))
    total = dict.fromkeys(INVALID_CAUSES, 0)
    with tempfile.TemporaryDirectory(prefix="crowdlab-close-") as tmp:
        personas = write_personas(sample(load_spec(SPEC), args.agents, seed=1), Path(tmp) / "personas.parquet")
        for variant in args.variants.split(","):
            scenario = {"kind": "beauty_contest", "variant": variant, "memory": args.memory}
            bound = BeautyContest(BeautyContestParams(**scenario)).max_answer_tokens()
            config = {"experiment": "close", "population": {"personas": str(personas)}, "scenario": scenario,
                      "backend": backend, "sampling": {"max_tokens": args.max_tokens},
                      "rounds": args.rounds, "shard_size": args.agents, "seed": 11}
            started = time.perf_counter()
            result = run(config, run_id=variant, runs_root=Path(tmp) / "runs")
            seconds = time.perf_counter() - started
            d = result.decisions(columns=["error", "output_tokens"])
            errors = pc.fill_null(d["error"], "").to_pylist()
            counts = {c: sum(e.startswith(c) for e in errors) for c in INVALID_CAUSES}
            for c in INVALID_CAUSES:
                total[c] += counts[c]
            out = d["output_tokens"].to_numpy()
            print(f"{variant}: {d.num_rows} answers in {seconds:.1f} s, invalid by cause "
                  + ", ".join(f"{c} {n}" for c, n in counts.items())
                  + f"; output tokens mean {out.mean():.1f}, max {out.max()} (bound {bound}, "
                  f"max_tokens {args.max_tokens})")
    close_backends()
    print("all variants: " + ", ".join(f"{c} {n}" for c, n in total.items()))


if __name__ == "__main__":
    main()
