"""Fleet scaling without GPUs: the paper's P1 workload (one round, one answer per agent) on Ray
engine actors that model GPU engines, through the real dispatch path (the driver reads inputs,
actors compute, the driver writes every shard's Parquet and settles the round).

The engines are simulated (``simulated_gpu`` backend): each batch takes 0.05 s + n / throughput.
The throughput is an ASSUMPTION (default 430 decisions/s per engine), about 10x what the AgentScope
paper measured per A100 (1M decisions in 12 minutes on 32 A100s = 43 decisions/s per GPU, two LLM
calls each): so this bench says how well crowdlab keeps a fast fleet busy, not how fast a fleet
is. No time is compared with the paper's.

So that 256 engines fit on a small machine, one actor process models ``--engines-per-actor``
engines (a simulated node with that many GPUs, serving that many batches at once); the driver
keeps as many batches in flight as with one actor per GPU. ``--time-scale`` divides every sleep:
with ``auto`` each fleet runs at the aggregate rate of the largest one (so the driver's load is
the same for every size) and times are printed in modelled seconds (wall x time scale).

Per fleet size it prints modelled time, decisions/s, fleet efficiency = ideal time (decisions /
sum of engine throughputs) / measured time (engine start-up excluded, printed apart), the driver's
CPU per decision and its peak RSS. Then orchestration overhead: per-shard cost of dispatch +
compute + write with a zero-latency engine and 10,000-agent shards.

Usage: .venv/bin/python bench/fleet.py [--agents 10000000] [--engines 32 128 256]
       [--throughput 430] [--shard-size 2000] [--engines-per-actor 64] [--time-scale auto]
       [--quick]   # --quick: 1M agents
Targets: efficiency >= 0.9 at every size up to 256 engines; overhead < 1 % of a shard's time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from crowdlab.experiments import execute, finish_run, prepare_run
from crowdlab.parquet_io import write_table_atomic

PAPER_DECISIONS, PAPER_SECONDS, PAPER_GPUS = 1_000_000, 12 * 60, 32  # AgentScope P1: 1M agents, 12 min, 32 A100


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 50 ms)."""

    def __enter__(self) -> "PeakRSS":
        self.peak = self._now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._now())


def timed_run(config: dict[str, Any], runs: Path, run_id: str) -> dict[str, Any]:
    """Wall and driver-CPU seconds spent in ``execute`` (engine start-up included), peak driver
    RSS, and the finished manifest."""
    handle = prepare_run(config, run_id=run_id, runs_root=runs)
    with PeakRSS() as rss:
        cpu, started = time.process_time(), time.perf_counter()
        execute(handle)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    result = finish_run(handle.run_dir)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    return {"seconds": seconds, "cpu": cpu, "rss": rss.peak, "manifest": manifest}


def config_for(personas: Path, actors: int, per_actor: int, shard_size: int,
               backend: dict[str, Any]) -> dict[str, Any]:
    return {
        "experiment": "bench_fleet", "population": {"personas": str(personas)},
        "scenario": {"kind": "beauty_contest", "p": 0.6667, "variant": "P1"},
        "backend": dict(backend, engines=per_actor), "rounds": 1, "shard_size": shard_size, "seed": 1,
        "dispatch": {"kind": "ray", "gpus_per_engine": per_actor, "engines_per_model": actors,
                     "num_cpus_per_engine": 0},
    }


def fleet(args: argparse.Namespace, personas: Path, runs: Path) -> None:
    biggest = max(args.engines)
    for engines in args.engines:
        per_actor = min(args.engines_per_actor, engines)
        if engines % per_actor:
            raise SystemExit(f"error: engines: {engines} is not a multiple of --engines-per-actor {per_actor}")
        scale = biggest / engines if args.time_scale == "auto" else float(args.time_scale)
        backend = {"kind": "simulated_gpu", "throughput": args.throughput, "fixed_latency_s": args.fixed_latency,
                   "time_scale": scale}
        cfg = config_for(personas, engines // per_actor, per_actor, args.shard_size, backend)
        out = timed_run(cfg, runs, f"e{engines}")
        manifest = out["manifest"]
        start_up = manifest["dispatch"]["engines_ready_s"]
        n = manifest["counts"]["decisions"]
        working = (out["seconds"] - start_up) * scale  # modelled seconds
        ideal = n / (args.throughput * engines)
        eff = ideal / working
        load = os.getloadavg()[0]
        print(f"{engines:>4} engines ({engines // per_actor} actors x {per_actor}, time scale x{scale:g}): "
              f"{n:,} decisions in {working:,.1f} modelled s ({n / working:,.0f}/s; ideal {ideal:,.1f} s), "
              f"efficiency {eff:.3f} [target >= 0.9: {'met' if eff >= 0.9 else 'MISSED'}]; "
              f"wall {out['seconds'] - start_up:,.1f} s after {start_up:.1f} s start-up; driver "
              f"{1e6 * out['cpu'] / n:.1f} us CPU/decision, peak RSS {out['rss'] / 2**30:.2f} GiB; load {load:.1f}",
              flush=True)
        d = manifest["dispatch"].get("driver_s", {})
        settle = d.get("settle_s", 0.0)
        print(f"      driver: Parquet writes {d.get('write_s', 0):.1f} s (writer thread), inputs {d.get('inputs_s', 0):.1f} s, "
              f"settle barrier {settle:.1f} s, waiting on writes {d.get('wait_s', 0):.1f} s (wall); efficiency "
              f"without the settle barrier {ideal / (working - settle * scale):.3f}", flush=True)
        shutil.rmtree(runs / "bench_fleet" / f"e{engines}", ignore_errors=True)


def overhead(args: argparse.Namespace, work: Path) -> None:
    shards, size = args.overhead_shards, 10_000
    personas = synthetic_personas(shards * size, work / "overhead.parquet")
    backend = {"kind": "simulated_gpu", "throughput": 1e12, "fixed_latency_s": 0.0}
    out = timed_run(config_for(personas, 1, 1, size, backend), work / "runs", "overhead")
    per_shard = (out["seconds"] - out["manifest"]["dispatch"]["engines_ready_s"]) / shards
    shard_time = size / args.throughput
    print(f"orchestration overhead: {per_shard * 1000:.0f} ms per 10,000-agent shard (inputs, dispatch, "
          f"actor compute, return, Parquet write; 1 zero-latency engine, {shards} shards) = "
          f"{100 * per_shard / shard_time:.2f}% of the {shard_time:.1f} s an engine at {args.throughput:g}/s "
          f"needs for it [target < 1%: {'met' if per_shard < 0.01 * shard_time else 'MISSED'}]")


def synthetic_personas(n: int, path: Path) -> Path:
    return write_table_atomic(pa.table({"agent_id": np.arange(n, dtype=np.int64)}), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=10_000_000)
    ap.add_argument("--engines", type=int, nargs="+", default=[32, 128, 256])
    ap.add_argument("--throughput", type=float, default=430.0, help="assumed decisions/s of one engine")
    ap.add_argument("--fixed-latency", type=float, default=0.05, help="seconds per batch on top of n/throughput")
    ap.add_argument("--shard-size", type=int, default=2000)
    ap.add_argument("--engines-per-actor", type=int, default=64, help="simulated engines in one actor process")
    ap.add_argument("--time-scale", default="auto", help="divide every sleep by this; auto: largest fleet / fleet")
    ap.add_argument("--overhead-shards", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="1M agents instead of --agents")
    args = ap.parse_args()
    agents = 1_000_000 if args.quick else args.agents

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    logging.basicConfig(level=logging.WARNING)
    ray.init(num_cpus=os.cpu_count(), num_gpus=max(args.engines), include_dashboard=False, logging_level="WARNING")
    work = Path(tempfile.mkdtemp(prefix="crowdlab-fleet-"))
    try:
        paper_rate = PAPER_DECISIONS / (PAPER_SECONDS * PAPER_GPUS)
        print(f"simulated fleet: {agents:,} agents, P1, 1 round, shards of {args.shard_size:,}, {os.cpu_count()} "
              f"CPU cores, load {os.getloadavg()[0]:.1f} at start")
        print(f"engines ASSUMED at {args.throughput:g} decisions/s each + {args.fixed_latency:g} s per batch; "
              f"the paper measured {paper_rate:.0f} decisions/s per A100 (1M in 12 min on 32 GPUs, 2 calls each), "
              f"{args.throughput / paper_rate:.0f}x less: these figures are about keeping a fast fleet busy")
        fleet(args, synthetic_personas(agents, work / "personas.parquet"), work / "runs")
        overhead(args, work)
        print(f"driver process peak RSS over the whole bench: "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
