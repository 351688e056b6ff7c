"""Opinion dynamics at a million agents: Barabási–Albert network generation, then 10 rounds of
the bounded-confidence baseline through the whole runner (peer views built from the CSR index,
decisions and rounds in Parquet, outcomes settled from the network), optionally with posts
(``--messages``: every agent posts each round, next round each reads at most k).

Targets (issue 15): the whole run <= 60 s here, network generation <= 10 s, peak memory <= 6 GiB.
Timing on a shared machine is disturbed by other work: the load average is printed beside it.
Usage: .venv/bin/python bench/network.py [--agents 1000000] [--m 5] [--rounds 10]
       [--shard-size 100000] [--concurrent-shards 2] [--messages]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.experiments import close_backends, run
from crowdlab.experiments.network import build_network
from crowdlab.experiments.network.config import BarabasiAlbert
from crowdlab.parquet_io import write_table_atomic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=1_000_000)
    ap.add_argument("--m", type=int, default=5, help="BA edges per new node (mean degree 2m)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--shard-size", type=int, default=100_000)
    ap.add_argument("--concurrent-shards", type=int, default=2)
    ap.add_argument("--messages", action="store_true", help="every agent posts; each reads at most k = 5")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="crowdlab-network-"))
    try:
        ids = np.arange(args.agents, dtype=np.int64)
        people = pa.table({"agent_id": ids, "party": pa.array(np.array(["left", "centre", "right"])[ids % 3])})
        personas = write_table_atomic(people, work / "personas.parquet")

        t = time.perf_counter()
        graph = build_network(BarabasiAlbert(m=args.m), people, seed=1)
        gen_s = time.perf_counter() - t
        load_gen = os.getloadavg()[0]
        del graph

        scenario = {"kind": "opinion", "initial": {"mean": 4, "sd": 1.5,
                                                   "shift": {"party": {"left": -1.0, "right": 1.0}}}}
        if args.messages:
            scenario["messages"] = {"k": 5, "select": "recent"}
        config = {
            "experiment": "bench_network",
            "population": {"personas": str(personas)},
            "network": {"kind": "barabasi_albert", "m": args.m},
            "scenario": scenario,
            "backend": {"kind": "opinion_dynamics", "model": "bounded_confidence", "epsilon": 1.0},
            "rounds": args.rounds, "shard_size": args.shard_size, "seed": 1,
            "max_concurrent_shards": args.concurrent_shards,
        }
        t = time.perf_counter()
        result = run(config, run_id="bench", runs_root=work / "runs")
        wall = time.perf_counter() - t
        load_run = os.getloadavg()[0]
        close_backends()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        manifest = json.loads((result.run_dir / "manifest.json").read_text())
        rounds = result.rounds().filter(pc.equal(result.rounds()["group"], -1)).to_pandas()
        size = sum(f.stat().st_size for f in result.run_dir.rglob("*") if f.is_file()) / 2**20
        print(f"network: Barabasi-Albert n={args.agents:,} m={args.m}: {gen_s:.1f} s "
              f"(target <= 10 s), load average {load_gen:.1f} on {os.cpu_count()} cores")
        print(f"run: {args.rounds} rounds of bounded confidence{' with messages' if args.messages else ''}, "
              f"{result.n_decisions:,} decisions, Parquet included: {wall:.1f} s (target <= 60 s, includes generating "
              f"the network again in prepare), load average {load_run:.1f}")
        print(f"peak memory (max RSS of this process): {rss:.2f} GiB (target <= 6 GiB); run folder {size:.0f} MiB")
        print(f"degree quantiles: {manifest['network']['degree']}")
        print(rounds[["round", "mean", "outcome_variance", "outcome_bimodality", "outcome_assortativity",
                      "outcome_changed_share"]].to_string(index=False))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
