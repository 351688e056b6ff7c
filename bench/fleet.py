"""Fleet scaling without GPUs: the paper's 1M-agent P1 workload on Ray engine actors that model
GPU engines (``simulated_gpu`` backend: each batch takes fixed + n / throughput seconds), over 8
and 32 logical GPUs, through the real dispatch path (driver reads inputs, actors compute, the
driver writes every shard's Parquet and settles the round).

Prints wall time, decisions/s and fleet efficiency = ideal time (decisions / sum of engine
throughputs) / measured time (engine start-up excluded; printed apart), beside the paper's
12 minutes on 32 A100s. Then orchestration overhead: per-shard cost of dispatch + compute +
write with a zero-latency engine and 10,000-agent shards, against the 23 s such a shard takes
an engine at the fleet figure (target < 1%).

Usage: .venv/bin/python bench/fleet.py [--agents 1000000] [--engines 8 32] [--throughput 430]
       [--shard-size 2000] [--quick]   # --quick: 100,000 agents (a ~10x shorter run)
Targets: efficiency >= 0.9 at 32 engines; overhead < 0.23 s per 10,000-agent shard.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from crowdlab.experiments import execute, finish_run, prepare_run
from crowdlab.parquet_io import write_table_atomic

PAPER_MINUTES, PAPER_GPUS = 12.0, 32


def timed_run(config: dict[str, Any], runs: Path, run_id: str) -> tuple[float, dict[str, Any]]:
    """Seconds spent in ``execute`` (engine start-up included) and the finished manifest."""
    handle = prepare_run(config, run_id=run_id, runs_root=runs)
    started = time.perf_counter()
    execute(handle)
    seconds = time.perf_counter() - started
    result = finish_run(handle.run_dir)
    return seconds, json.loads((result.run_dir / "manifest.json").read_text())


def config_for(personas: Path, engines: int, shard_size: int, backend: dict[str, Any]) -> dict[str, Any]:
    return {
        "experiment": "bench_fleet", "population": {"personas": str(personas)},
        "scenario": {"kind": "beauty_contest", "p": 0.6667, "variant": "P1"},
        "backend": backend, "rounds": 1, "shard_size": shard_size, "seed": 1,
        "dispatch": {"kind": "ray", "gpus_per_engine": 1, "engines_per_model": engines, "num_cpus_per_engine": 0},
    }


def fleet(args: argparse.Namespace, personas: Path, runs: Path) -> None:
    backend = {"kind": "simulated_gpu", "throughput": args.throughput, "fixed_latency_s": args.fixed_latency}
    for engines in args.engines:
        seconds, manifest = timed_run(config_for(personas, engines, args.shard_size, backend), runs, f"e{engines}")
        start_up = manifest["dispatch"]["engines_ready_s"]
        n = manifest["counts"]["decisions"]
        ideal = n / (args.throughput * engines)
        working = seconds - start_up
        print(f"{engines:>3} engines: {n:,} decisions in {working:.1f} s after {start_up:.1f} s of engine "
              f"start-up ({n / working:,.0f} decisions/s; ideal {ideal:.1f} s at {args.throughput:g}/s per "
              f"engine); fleet efficiency {ideal / working:.3f}"
              + (f"  [target >= 0.9: {'met' if ideal / working >= 0.9 else 'MISSED'}]" if engines >= 32 else ""))
        if engines == PAPER_GPUS:
            paper = PAPER_MINUTES * 60 * n / 1_000_000
            print(f"     paper (AgentScope, Llama3-8B P1, 32 A100): {PAPER_MINUTES:g} min for 1M agents"
                  f" -> {paper:.0f} s for {n:,}; this simulated fleet: {working:.0f} s")


def overhead(args: argparse.Namespace, work: Path) -> None:
    shards, size = args.overhead_shards, 10_000
    personas = synthetic_personas(shards * size, work / "overhead.parquet")
    backend = {"kind": "simulated_gpu", "throughput": 1e12, "fixed_latency_s": 0.0}
    seconds, manifest = timed_run(config_for(personas, 1, size, backend), work / "runs", "overhead")
    per_shard = (seconds - manifest["dispatch"]["engines_ready_s"]) / shards
    shard_time = size / args.throughput
    print(f"orchestration overhead: {per_shard * 1000:.0f} ms per 10,000-agent shard (inputs, dispatch, "
          f"actor compute, return, Parquet write; 1 zero-latency engine, {shards} shards) = "
          f"{100 * per_shard / shard_time:.2f}% of the {shard_time:.1f} s an engine needs for it "
          f"[target < 1%: {'met' if per_shard < 0.01 * shard_time else 'MISSED'}]")


def synthetic_personas(n: int, path: Path) -> Path:
    return write_table_atomic(pa.table({"agent_id": np.arange(n, dtype=np.int64)}), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=1_000_000)
    ap.add_argument("--engines", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--throughput", type=float, default=430.0, help="decisions/s of one engine")
    ap.add_argument("--fixed-latency", type=float, default=0.05, help="seconds per batch on top of n/throughput")
    ap.add_argument("--shard-size", type=int, default=2000)
    ap.add_argument("--overhead-shards", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="100,000 agents instead of 1M")
    args = ap.parse_args()
    agents = 100_000 if args.quick else args.agents

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    logging.basicConfig(level=logging.WARNING)
    ray.init(num_cpus=os.cpu_count(), num_gpus=max(args.engines), include_dashboard=False, logging_level="WARNING")
    work = Path(tempfile.mkdtemp(prefix="crowdlab-fleet-"))
    try:
        print(f"simulated fleet: {agents:,} agents, P1, 1 round, shards of {args.shard_size:,}, engines at "
              f"{args.throughput:g} decisions/s + {args.fixed_latency:g} s per batch, {os.cpu_count()} CPU cores")
        fleet(args, synthetic_personas(agents, work / "personas.parquet"), work / "runs")
        overhead(args, work)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
