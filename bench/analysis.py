"""Benchmark: load and summarise a 1M-agent x 5-round run; prints wall time and peak memory.

Writes a synthetic run folder following docs/contracts.md (level-k-like guesses drifting down
each round, ~1% invalid answers, 20 shards per round), then times, in a fresh child process so
the peak RSS is the analysis's own: ``load`` + ``round_metrics`` + ``level_k_shares`` +
``breakdown`` by a persona attribute + ``fidelity``. Budget: under 30 s and under 4 GiB.
Then, as a separate figure, the full HTML report (``write_report``) on the same opened run.

    .venv/bin/python bench/analysis.py [--agents 1000000] [--rounds 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.parquet_io import write_table_atomic

EDUCATION = np.array(["high school", "bachelor", "master", "phd"])


def _decisions_schema() -> pa.Schema:
    try:  # the engine's canonical schema once it exists
        from crowdlab.experiments.schema import decisions_schema
        return decisions_schema(["prompt"])
    except ImportError:
        return pa.schema([
            ("run_id", pa.string()), ("condition_id", pa.string()), ("replicate", pa.int32()),
            ("round", pa.int32()), ("shard", pa.int32()), ("agent_id", pa.int64()), ("group", pa.int32()),
            ("model", pa.string()), ("seed", pa.int64()), ("text", pa.string()), ("value", pa.float64()),
            ("valid", pa.bool_()), ("error", pa.string()), ("input_tokens", pa.int32()),
            ("output_tokens", pa.int32()), ("latency_s", pa.float64()), ("prompt", pa.string()),
        ])


def generate(run_dir: Path, agents: int, rounds: int, shards: int = 20, seed: int = 0) -> None:
    """Write the synthetic run: vectorised per shard, nothing per agent in Python."""
    rng = np.random.default_rng(seed)
    schema = _decisions_schema()
    p = 2 / 3
    level = rng.choice([0, 1, 2, 3], size=agents, p=[0.25, 0.4, 0.25, 0.1])
    bounds = np.linspace(0, agents, shards + 1).astype(np.int64)
    round_rows = []
    for rnd in range(1, rounds + 1):
        centre = 50 * p ** (level + rnd - 1)
        value = np.clip(np.round(centre + rng.normal(0, 4, agents), 1), 0, 100)
        invalid = rng.random(agents) < 0.01
        value = np.where(invalid, np.nan, value)
        for s in range(shards):
            lo, hi = bounds[s], bounds[s + 1]
            n = int(hi - lo)
            v = pa.array(value[lo:hi], from_pandas=True)
            text = pc.if_else(pc.is_null(v), pa.scalar("I refuse"), pc.cast(v, pa.string()))
            ok = ~invalid[lo:hi]
            table = pa.table({
                "run_id": pa.array(["bench"] * n), "condition_id": pa.array(["c000"] * n),
                "replicate": np.zeros(n, np.int32), "round": np.full(n, rnd, np.int32),
                "shard": np.full(n, s, np.int32), "agent_id": np.arange(lo, hi, dtype=np.int64),
                "group": np.zeros(n, np.int32), "model": pa.array(["behavioral"] * n),
                "seed": np.arange(lo, hi, dtype=np.int64) + rnd * agents, "text": text, "value": v,
                "valid": ok, "error": pa.array(np.where(ok, None, "unparseable")),
                "input_tokens": np.full(n, 120, np.int32), "output_tokens": np.ones(n, np.int32),
                "latency_s": np.full(n, 0.001), "prompt": pa.array(["P1"] * n),
            }, schema=schema)
            path = run_dir / f"decisions/condition_id=c000/replicate=0/round={rnd}/shard-{s}.parquet"
            write_table_atomic(table, path)
        round_rows.append({"run_id": "bench", "condition_id": "c000", "replicate": 0, "round": rnd, "group": -1,
                           "p": p, "offset": 0.0, "lo": 0.0, "hi": 100.0, "prompt": "P1"})
    write_table_atomic(pa.Table.from_pylist(round_rows), run_dir / "rounds.parquet")
    personas = pa.table({"agent_id": np.arange(agents, dtype=np.int64),
                         "education": EDUCATION[rng.integers(0, 4, agents)],
                         "age": rng.integers(18, 80, agents)})
    write_table_atomic(personas, run_dir / "personas/personas.parquet")
    (run_dir / "manifest.json").write_text(json.dumps({"run_id": "bench", "status": "finished"}))


def summarise(run_dir: Path) -> dict[str, float]:
    """The measured part: what a report needs from a big run."""
    from crowdlab import analysis

    start = time.perf_counter()
    run = analysis.load(run_dir)
    metrics = analysis.round_metrics(run)
    shares = analysis.level_k_shares(run)
    by_edu = analysis.breakdown(run, "education")
    fid = analysis.fidelity(metrics)
    seconds = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # ru_maxrss is KiB on Linux
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        analysis.write_report(run, Path(tmp) / "report.html")
    report_seconds = time.perf_counter() - start
    report_peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    return {"seconds": seconds, "peak_rss_gib": peak_gib, "report_seconds": report_seconds,
            "report_peak_rss_gib": report_peak_gib, "rows": int(metrics["n"].sum()),
            "metric_rows": len(metrics), "share_rows": len(shares), "breakdown_rows": len(by_edu),
            "fidelity_rows": len(fid)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", type=Path, default=None, help="write the run here and keep it")
    parser.add_argument("--summarise-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.summarise_only:
        print(json.dumps(summarise(args.summarise_only)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.keep or Path(tmp) / "bench"
        start = time.perf_counter()
        if not (run_dir / "manifest.json").exists():
            generate(run_dir, args.agents, args.rounds)
        print(f"generated {args.agents:,} agents x {args.rounds} rounds in {time.perf_counter() - start:.1f} s")
        child = subprocess.run([sys.executable, __file__, "--summarise-only", str(run_dir)],
                               check=True, capture_output=True, text=True)
        result = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"load + summarise: {result['seconds']:.1f} s (budget 30 s), "
          f"peak RSS {result['peak_rss_gib']:.2f} GiB (budget 4 GiB), {result['rows']:,} decisions")
    print(f"full HTML report afterwards: {result['report_seconds']:.1f} s, "
          f"peak RSS so far {result['report_peak_rss_gib']:.2f} GiB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
