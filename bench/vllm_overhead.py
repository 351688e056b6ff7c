"""crowdlab's overhead around vLLM: raw ``LLM.chat`` vs the full run path, same engine, same prompts.

The full path is ``crowdlab.experiments.run`` with the ``vllm`` backend: prompt rendering,
request seeds, structured-output sampling parameters, the engine call, parsing and checking
answers, atomic Parquet writes, round settling and the manifest. The raw path replays the very
requests crowdlab sent (captured on a warm-up run) straight into ``LLM.chat``, timing only that
call. Both use one warm engine, so engine start-up is in neither figure.

Usage: .venv/bin/python bench/vllm_overhead.py [--agents 10000] [--rounds 2] [--shard-size 5000]
       [--model PATH]   # default: a tiny random Qwen2 built into a temp folder (CPU friendly)
Prints pipeline efficiency = raw time / crowdlab time (target >= 0.9), output tokens/s,
decisions/s, and two in-run shares of a crowdlab run's wall time: inside ``LLM.chat`` alone (the
engine call, timed by wrapping the warm engine's ``chat``), and inside the whole backend step
(prompt rendering, request building, sampling parameters and ``LLM.chat``: the manifest's
``engine_busy_s``).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from crowdlab.experiments import close_backends, run
from crowdlab.experiments.backends.base import RequestBatch
from crowdlab.experiments.backends.tiny_model import build_tiny_model
from crowdlab.experiments.backends.vllm_offline import VLLMBackend, VLLMBackendConfig
from crowdlab.personas import load_spec, sample, write_personas

SPEC = "data/populations/general_adult.yaml"


def experiment(personas: Path, backend: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    return {
        "experiment": "vllm_overhead",
        "population": {"personas": str(personas)},
        # Integer guesses: a random-weight model otherwise spends its whole token budget on decimals,
        # while real models answer {"guess": 33} in a handful of tokens.
        "scenario": {"kind": "beauty_contest", "variant": args.variant, "integer_only": not args.decimals},
        "backend": backend,
        "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": args.max_tokens},
        "rounds": args.rounds,
        "shard_size": args.shard_size,
        "seed": 3,
    }


def capture_requests(config: dict[str, Any], runs_root: Path) -> list[RequestBatch]:
    """Run once (warms the engine and the prefix cache) and keep every batch the backend got."""
    batches: list[RequestBatch] = []
    original = VLLMBackend.generate

    def recording(self: VLLMBackend, batch: RequestBatch):  # type: ignore[no-untyped-def]
        batches.append(batch)
        return original(self, batch)

    VLLMBackend.generate = recording  # type: ignore[method-assign]
    try:
        run(config, run_id="warmup", runs_root=runs_root)
    finally:
        VLLMBackend.generate = original  # type: ignore[method-assign]
    return batches


def time_raw(backend: VLLMBackend, batches: list[RequestBatch]) -> tuple[float, int]:
    """Seconds spent in ``LLM.chat`` alone for the captured batches, and their output tokens."""
    params = [backend._sampling_params(b) for b in batches]  # built outside the timed region
    engine = backend.engine
    started = time.perf_counter()
    tokens = 0
    for batch, sampling in zip(batches, params):
        outputs = engine.chat(batch.messages, sampling, use_tqdm=False)
        tokens += sum(len(o.outputs[0].token_ids) for o in outputs)
    return time.perf_counter() - started, tokens


class ChatTimer:
    """Wraps the warm engine's ``chat`` to add up the seconds spent in it (the engine call alone)."""

    def __init__(self, engine: Any) -> None:
        self.seconds = 0.0
        self._chat = engine.chat

        def timed_chat(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return self._chat(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        engine.chat = timed_chat


def time_crowdlab(config: dict[str, Any], runs_root: Path, run_id: str,
                  timer: ChatTimer) -> tuple[float, int, float, float]:
    """Wall seconds of ``run()``, output tokens, seconds in the backend step (rendering, request
    and sampling parameters, ``LLM.chat``) and seconds in ``LLM.chat`` alone."""
    timer.seconds = 0.0
    started = time.perf_counter()
    result = run(config, run_id=run_id, runs_root=runs_root)
    seconds = time.perf_counter() - started
    tokens = int(result.decisions(columns=["output_tokens"])["output_tokens"].to_numpy().sum())
    step = sum(float(t.get("engine_busy_s", 0.0)) for t in result.throughput.values())
    return seconds, tokens, step, timer.seconds


def profile_crowdlab(config: dict[str, Any], runs_root: Path) -> None:
    """Where crowdlab's own time goes (everything but the engine), for --profile."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    run(config, run_id="profile", runs_root=runs_root)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=5_000)
    ap.add_argument("--repeats", type=int, default=2, help="timed passes of each path (best is kept)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--variant", default="P2")
    ap.add_argument("--decimals", action="store_true", help="allow non-integer guesses")
    ap.add_argument("--model", default=None, help="model folder or hub id (default: tiny random model)")
    ap.add_argument("--profile", action="store_true", help="cProfile one crowdlab run instead")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="crowdlab-vllm-bench-") as tmp:
        root = Path(tmp)
        model = args.model or str(build_tiny_model(root / "tiny-model"))
        personas = write_personas(sample(load_spec(SPEC), args.agents, seed=1), root / "personas.parquet")
        backend_cfg = {"kind": "vllm", "model": model, "gpu_memory_utilization": args.gpu_memory_utilization,
                       "enforce_eager": True, "max_model_len": 2048}
        config = experiment(Path(personas), backend_cfg, args)
        runs_root = root / "runs"

        batches = capture_requests(config, runs_root)
        backend = VLLMBackend(VLLMBackendConfig(**backend_cfg))  # same options: the cached warm engine
        if args.profile:
            profile_crowdlab(config, runs_root)
            return
        raw_s, crowd_s, step_s, chat_s = [], [], [], []
        raw_tokens = crowd_tokens = 0
        for rep in range(args.repeats):  # interleaved, so machine load drifts hit both paths
            seconds, raw_tokens = time_raw(backend, batches)
            raw_s.append(seconds)
            timer = ChatTimer(backend.engine)  # after time_raw: the raw pass calls the unwrapped chat
            seconds, crowd_tokens, step, chat = time_crowdlab(config, runs_root, f"rep{rep}", timer)
            backend.engine.chat = timer._chat
            crowd_s.append(seconds)
            step_s.append(step)
            chat_s.append(chat)
        close_backends()

    decisions = args.agents * args.rounds
    raw, crowd = min(raw_s), min(crowd_s)
    print(f"agents={args.agents} rounds={args.rounds} shard_size={args.shard_size} "
          f"shards/round={-(-args.agents // args.shard_size)} model={args.model or 'tiny random Qwen2 (CPU)'}")
    print(f"raw LLM.chat:      {raw:8.2f} s  (passes: {', '.join(f'{s:.2f}' for s in raw_s)})")
    print(f"crowdlab run():    {crowd:8.2f} s  (passes: {', '.join(f'{s:.2f}' for s in crowd_s)})")
    print(f"pipeline efficiency (raw / crowdlab): {raw / crowd:.3f}   target >= 0.9")
    print("in-run share inside LLM.chat alone (load-robust): "
          + ", ".join(f"{b / c:.4f}" for b, c in zip(chat_s, crowd_s)))
    print("in-run share inside the backend step (rendering, sampling params, LLM.chat): "
          + ", ".join(f"{b / c:.4f}" for b, c in zip(step_s, crowd_s)))
    print(f"output tokens: raw {raw_tokens}, crowdlab {crowd_tokens}")
    print(f"output tokens/s:   raw {raw_tokens / raw:,.0f}   crowdlab {crowd_tokens / crowd:,.0f}")
    print(f"decisions/s:       raw {decisions / raw:,.0f}   crowdlab {decisions / crowd:,.0f}")


if __name__ == "__main__":
    main()
