"""Engine throughput: 1M agents x 5 rounds of the beauty contest with the behavioural backend,
end to end (prepare, every shard's decisions written to Parquet, settling, rounds.parquet).

Usage: .venv/bin/python bench/engine.py [--agents 1000000] [--rounds 5] [--shard-size 100000]
       [--sample-spec data/populations/general_adult.yaml]   # also time persona sampling
Target: under 60 s on a 2-core machine. Prints decisions/s.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from crowdlab.experiments import run
from crowdlab.parquet_io import write_table_atomic

EDUCATION = np.array(["high school graduate", "bachelor's degree", "master's degree",
                      "professional or doctoral degree"])


def synthetic_personas(n: int, path: Path) -> Path:
    """A persona table with the columns the run reads (fast to build, so the engine is timed)."""
    ids = np.arange(n, dtype=np.int64)
    return write_table_atomic(pa.table({"agent_id": ids, "education": EDUCATION[ids % 4]}), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shard-size", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--sample-spec", default=None, help="time crowdlab.personas.sample on this spec too")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="crowdlab-bench-"))
    try:
        if args.sample_spec:
            from crowdlab.personas import load_spec, sample

            t = time.perf_counter()
            table = sample(load_spec(args.sample_spec), args.agents, 1)
            print(f"persona sampling ({args.sample_spec}): {args.agents:,} personas in "
                  f"{time.perf_counter() - t:.1f} s (not included below)")
            personas = write_table_atomic(table, work / "personas.parquet")
        else:
            personas = synthetic_personas(args.agents, work / "personas.parquet")
        config = {
            "experiment": "bench_engine",
            "population": {"personas": str(personas)},
            "scenario": {"kind": "beauty_contest", "p": 0.6667, "variant": "P1"},
            "backend": {"kind": "behavioral", "tau": 1.5,
                        "tau_by": {"education": {"professional or doctoral degree": 2.5}}},
            "rounds": args.rounds, "shard_size": args.shard_size, "seed": 1,
            "max_concurrent_shards": args.concurrency,
        }
        t = time.perf_counter()
        result = run(config, run_id="bench", runs_root=work / "runs")
        wall = time.perf_counter() - t
        size = sum(f.stat().st_size for f in (work / "runs").rglob("*.parquet")) / 1e6
        n = result.n_decisions
        means = [round(m, 2) for m in result.rounds().filter(pa.compute.equal(result.rounds()["group"], -1))["mean"].to_pylist()]
        print(f"behavioral engine: {args.agents:,} agents x {args.rounds} rounds = {n:,} decisions "
              f"in {wall:.1f} s end to end ({n / wall:,.0f} decisions/s; {size:.0f} MB of Parquet)")
        print(f"target 60 s: {'met' if wall < 60 else 'MISSED'} ({wall / 60:.2f} of the budget)")
        print(f"round means: {means}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
