"""The framework's CPU cost per decision, set against a GPU engine's time per decision.

A zero-latency engine (``simulated_gpu`` with ``json_answers``: it takes the rendered chats and
returns JSON texts the scenario must parse, as vLLM does under the answer schema, in no time)
plays the beauty contest through the whole local path: the driver reads each shard's inputs, the
scenario renders the chats, the answers are parsed and checked, the decision table is built in
Arrow and written to Parquet with its prompt audit trail, and each round is settled. Every stage
is timed in CPU seconds of the thread that runs it (``time.thread_time``, so other processes on a
loaded machine do not inflate it). The two steps that only the vLLM backend does, building one
``SamplingParams`` with the structured-output parameters per request and turning vLLM's outputs
into a response batch, are timed on the real ``VLLMBackend`` methods (when vLLM is installed).

Projected efficiency = engine time / (engine time + framework time the engine waits for), at
430 and 1,300 decisions/s per engine (2.3 and 0.77 ms per decision):

* without overlap, every stage runs between two engine calls (one shard at a time);
* with overlap (two shards in flight on one engine: the next shard is rendered, and the last
  one parsed and written, while the engine runs), the framework work of a round hides behind
  the engine except for one shard's worth per round (the pipeline fills and drains around the
  settle barrier); it costs nothing while it is shorter than the engine's time:
  ``S e / (S max(e, f) + f)`` for S shards per round. The framework's threads share one GIL,
  so in one process all stages count; on Ray the driver's stages (inputs, Parquet, settle) run in
  another process and only the actor's stages count.

Then it checks the projection by measurement: the same run on ``simulated_gpu`` engines that
really take n / throughput seconds per batch, one shard at a time and two in flight, locally and
(``--ray``) on one Ray engine actor. Measured efficiency = the engine's modelled busy time / wall
time of the run (on Ray: the cluster is started before and stopped after the timed runs, and
the engine actor's start-up is left out). Times are disturbed by whatever else runs on the
machine (the stage CPU times much less than the measured efficiencies).

Usage: .venv/bin/python bench/framework_cost.py [--agents 20000] [--shard-size 2000] [--rounds 2]
       [--variant P2] [--measure 1300] [--ray] [--profile FILE]
Target: projected efficiency >= 0.95 at 1,300 decisions/s with overlap.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from crowdlab.experiments import execute, finish_run, prepare_run
from crowdlab.experiments import runner, shard_step
from crowdlab.experiments.run_context import load_context
from crowdlab.experiments.scenarios.beauty_contest import BeautyContest

RATES = (430.0, 1300.0)
ACTOR_STAGES = ("render", "sampling params (vLLM)", "outputs to responses (vLLM)", "prompt audit", "parse",
                "check", "arrow table")
DRIVER_STAGES = ("shard inputs", "parquet write", "settle round", "other")


class StageClock:
    """CPU seconds per stage (of the thread running it), summed over calls; nested stages are
    taken out of their parent, so the stages add up to the whole."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()
        self._local = threading.local()

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack = getattr(self._local, "stack", None)
            if stack is None:
                stack = self._local.stack = []
            stack.append(0.0)  # CPU of nested stages
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - start
                inner = stack.pop()
                with self._lock:
                    self.cpu[stage] += spent - inner
                if stack:
                    stack[-1] += spent
        return timed


def base_config(agents: int, shard_size: int, rounds: int, backend: dict[str, Any],
                variant: str = "P2") -> dict[str, Any]:
    return {
        "experiment": "bench_framework_cost",
        "population": {"spec": "data/populations/general_adult.yaml", "n": agents, "seed": 1},
        "scenario": {"kind": "beauty_contest", "p": 0.6667, "variant": variant, "integer_only": True},
        "backend": backend, "rounds": rounds, "shard_size": shard_size, "seed": 1,
    }


def engine(throughput: float) -> dict[str, Any]:
    return {"kind": "simulated_gpu", "throughput": throughput, "fixed_latency_s": 0.0,
            "render_prompts": True, "json_answers": True}


def stage_costs(config: dict[str, Any], runs: Path) -> tuple[dict[str, float], int]:
    """CPU ms per decision of every stage of a zero-latency local run."""
    clock = StageClock()
    patches = [(shard_step, "shard_inputs"), (shard_step, "compute_shard"), (shard_step, "write_shard"),
               (shard_step, "prompt_tables"), (runner, "settle_round"), (BeautyContest, "render"),
               (BeautyContest, "parse"), (BeautyContest, "check")]
    names = {"shard_inputs": "shard inputs", "compute_shard": "arrow table", "write_shard": "parquet write",
             "prompt_tables": "prompt audit", "settle_round": "settle round", "render": "render",
             "parse": "parse", "check": "check"}
    from crowdlab.experiments.backends.simulated_gpu import SimulatedGPUBackend
    patches.append((SimulatedGPUBackend, "generate"))
    names["generate"] = "engine stand-in"
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr in patches]
    for owner, attr, fn in saved:
        setattr(owner, attr, clock.wrap(names[attr], fn))
    try:
        handle = prepare_run(config, run_id="stages", runs_root=runs)
        cpu = time.process_time()
        execute(handle)
        result = finish_run(handle.run_dir)
        cpu = time.process_time() - cpu
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)
    n = result.n_decisions
    ms = {stage: 1000 * s / n for stage, s in clock.cpu.items()}
    # the rest of the process's CPU while it ran (thread pool, manifest, finishing, other threads)
    ms["other"] = 1000 * (cpu - sum(clock.cpu.values())) / n
    ms.update(vllm_backend_costs(handle.run_dir, min(n, config["shard_size"])))
    return ms, n


def vllm_backend_costs(run_dir: Path, n: int) -> dict[str, float]:
    """CPU ms per decision of the vLLM backend's own steps around ``LLM.chat`` on an ``n``-request
    batch: per-request SamplingParams with the structured-output parameters, and outputs to a
    response batch (vLLM-like output objects built beforehand, not timed)."""
    try:
        from crowdlab.experiments.backends.vllm_offline import VLLMBackend, VLLMBackendConfig, _to_responses
        from crowdlab.experiments.backends import RequestBatch
    except ImportError:  # pragma: no cover - vLLM not installed
        return {}
    ctx = load_context(run_dir)
    cid = next(iter(ctx.conditions))
    scenario = ctx.scenario(cid)
    shell = SimpleNamespace(config=VLLMBackendConfig(model="none"))
    shell._structured = lambda batch: VLLMBackend._structured(shell, batch)  # type: ignore[attr-defined]
    batch = RequestBatch(agent_ids=np.arange(n), seeds=np.arange(n) + 12345, answer_schema=scenario.answer_schema(),
                         answer_regex=scenario.answer_regex(),
                         sampling=ctx.conditions[cid].config.sampling.settings())
    VLLMBackend._sampling_params(shell, batch)  # type: ignore[arg-type]  # warm: vLLM's imports
    start = time.thread_time()
    VLLMBackend._sampling_params(shell, batch)  # type: ignore[arg-type]
    params = time.thread_time() - start
    outputs = [SimpleNamespace(prompt_token_ids=list(range(300)), num_cached_tokens=280,
                               outputs=[SimpleNamespace(text=f'{{"guess": {i % 100}}}', token_ids=[1, 2, 3, 4, 5],
                                                        finish_reason="stop")]) for i in range(n)]
    start = time.thread_time()
    _to_responses(outputs, 1.0)
    convert = time.thread_time() - start
    return {"sampling params (vLLM)": 1000 * params / n, "outputs to responses (vLLM)": 1000 * convert / n}


def projected(e_ms: float, f_ms: float, shards_per_round: int, overlap: bool) -> float:
    if not overlap:
        return e_ms / (e_ms + f_ms)
    s = shards_per_round
    return s * e_ms / (s * max(e_ms, f_ms) + f_ms)


def measured(config: dict[str, Any], runs: Path, run_id: str, throughput: float, overlap: bool) -> float:
    """Engine busy time (modelled: decisions / throughput) over the run's wall time; without
    overlap the engine is treated as not ``pipelined`` (one shard at a time per engine worker)."""
    from crowdlab.experiments.backends.simulated_gpu import SimulatedGPUConfig

    handle = prepare_run(config, run_id=run_id, runs_root=runs)
    saved = SimulatedGPUConfig.pipelined
    if not overlap:
        SimulatedGPUConfig.pipelined = property(lambda self: False)  # type: ignore[method-assign,assignment]
    try:
        start = time.perf_counter()
        execute(handle)
        wall = time.perf_counter() - start
    finally:
        SimulatedGPUConfig.pipelined = saved  # type: ignore[method-assign]
    result = finish_run(handle.run_dir)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    ready = float(manifest.get("dispatch", {}).get("engines_ready_s", 0.0))
    return result.n_decisions / throughput / (wall - ready)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=20_000)
    ap.add_argument("--shard-size", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variant", default="P2", help="beauty-contest prompt variant (P5: persona descriptions)")
    ap.add_argument("--measure", type=float, nargs="*", default=[1300.0],
                    help="engine decisions/s at which to measure efficiency with a sleeping engine")
    ap.add_argument("--ray", action="store_true", help="also measure on one Ray engine actor")
    ap.add_argument("--profile", help="write a cProfile of the zero-latency run here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    shards = -(-args.agents // args.shard_size)

    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        zero = base_config(args.agents, args.shard_size, args.rounds, engine(1e12), args.variant)
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        ms, n = stage_costs(zero, runs)
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
        print(f"zero-latency engine, {n:,} decisions ({args.agents:,} agents x {args.rounds} rounds, "
              f"{shards} shards of {args.shard_size:,} per round), CPU ms per decision:")
        for stage in DRIVER_STAGES[:1] + ACTOR_STAGES + DRIVER_STAGES[1:]:
            where = "driver" if stage in DRIVER_STAGES else "engine worker"
            print(f"  {stage:30s} {ms.get(stage, float('nan')):7.4f}   ({where})")
        print(f"  {'(engine stand-in, not counted)':30s} {ms.get('engine stand-in', 0.0):7.4f}")
        actor = sum(ms.get(s, 0.0) for s in ACTOR_STAGES)
        total = actor + sum(ms.get(s, 0.0) for s in DRIVER_STAGES)
        print(f"  {'total (one process)':30s} {total:7.4f}\n  {'engine worker only (Ray actor)':30s} {actor:7.4f}")

        print("\nprojected efficiency per engine = engine time / (engine time + framework time it waits for):")
        print(f"  {'decisions/s':>11s}  {'ms each':>7s}  {'local serial':>12s}  {'local overlap':>13s}  "
              f"{'Ray serial':>10s}  {'Ray overlap':>11s}")
        for rate in RATES:
            e = 1000 / rate
            print(f"  {rate:11,.0f}  {e:7.3f}  {projected(e, total, shards, False):12.3f}  "
                  f"{projected(e, total, shards, True):13.3f}  {projected(e, actor, shards, False):10.3f}  "
                  f"{projected(e, actor, shards, True):11.3f}")
        at = projected(1000 / 1300, total, shards, True)
        print(f"  target >= 0.95 at 1,300/s with overlap (local): {'met' if at >= 0.95 else 'MISSED'} ({at:.3f})")

        if args.ray and args.measure:
            import ray

            # connected here, so a run does not shut the cluster down inside its timed wall
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
        for rate in args.measure:
            print(f"\nmeasured with an engine sleeping n/{rate:g} s per batch (efficiency = busy / wall):")
            setups = [("local", {})]
            if args.ray:
                setups.append(("Ray actor", {"dispatch": {"kind": "ray", "engines_per_model": 1,
                                                          "gpus_per_engine": 0, "num_cpus_per_engine": 0}}))
            for where, extra in setups:
                for overlap in (False, True):
                    cfg = dict(base_config(args.agents, args.shard_size, args.rounds, engine(rate), args.variant),
                               **extra)
                    eff = measured(cfg, runs, f"{where[:5]}-{overlap}-{rate:g}", rate, overlap)
                    label = f"{where}, {'two shards in flight' if overlap else 'one shard at a time'}"
                    print(f"  {label:40s} {eff:.3f}")
        if args.ray and args.measure:
            ray.shutdown()


if __name__ == "__main__":
    main()
