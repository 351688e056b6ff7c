"""Benchmark: backgrounds/s through the pipeline vs raw vLLM on the same engine and prompts.

The tiny random CPU model writes N backgrounds (default 10,000) with one gate read each
(max_tries=1, so both sides do exactly two engine calls per persona: write, then read back).
"raw" hands the same messages and sampling params straight to ``vllm.LLM.chat``; "pipeline" is
``add_backgrounds`` (prompt building, seeds, gate parsing and comparison, flags included).
Both arms send identical prompts and seeds, so whichever runs second would find the engine's
prefix cache warm with the first arm's prompts: the cache is reset before every arm
(``LLM.reset_prefix_cache``) and the arms alternate (raw, pipeline, pipeline, raw, ...).
Efficiency = mean raw seconds / mean pipeline seconds (target >= 0.9; the pipeline does the raw
arm's work and more, so an honest figure is at most about 1).
Run: .venv/bin/python bench/backgrounds.py [N] [WORDS] [PASSES]   # PASSES per arm, default 2
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

from crowdlab.experiments.backends import make_backend  # noqa: E402
from crowdlab.experiments.backends.tiny_model import build_tiny_model  # noqa: E402
from crowdlab.personas import load_spec, sample  # noqa: E402
from crowdlab.personas.backgrounds import prompts  # noqa: E402
from crowdlab.personas.backgrounds.write import STREAM_READ, STREAM_WRITE, add_backgrounds, contradiction_rates, numeric_fields  # noqa: E402
from crowdlab.hashing import seeds  # noqa: E402

SPEC = Path(__file__).resolve().parents[1] / "data" / "populations" / "backgrounds_demo.yaml"
TINY = {"gpu_memory_utilization": 0.1, "enforce_eager": True, "max_model_len": 1024, "dtype": "float32"}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    words = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    passes = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    spec = load_spec(SPEC)
    bg = spec.background.model_copy(update={"words": words, "gate": spec.background.gate.model_copy(update={"max_tries": 1})})
    spec = spec.model_copy(update={"background": bg})
    table = sample(spec, n, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "tiny")
        backend = make_backend({"kind": "vllm", "model": str(model), **TINY})
        engine = backend.engine
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        ids = table["agent_id"].to_numpy()
        schema = prompts.reader_schema(bg.gate_fields, numeric_fields(spec, bg.gate_fields))
        add_backgrounds(table.slice(0, 50), spec, 1, backend)  # warm-up (grammar compile, caches)

        def raw() -> list[str]:
            write_msgs = prompts.writer_messages(table, bg)
            wparams = [SamplingParams(temperature=bg.temperature, top_p=bg.top_p, max_tokens=bg.token_budget,
                                      seed=s) for s in seeds(1, ids, STREAM_WRITE, 1).tolist()]
            outs = engine.chat(write_msgs, wparams, use_tqdm=False, chat_template=None)
            texts = [o.outputs[0].text for o in outs]
            structured = StructuredOutputsParams(json=schema)  # one object shared, as the vllm backend does
            rparams = [SamplingParams(temperature=0.0, max_tokens=bg.gate.max_tokens, seed=s,
                                      structured_outputs=structured)
                       for s in seeds(1, ids, STREAM_READ, 1).tolist()]
            engine.chat(prompts.reader_messages(texts), rparams, use_tqdm=False, chat_template=None)
            return texts

        def timed(arm):  # type: ignore[no-untyped-def]
            if not engine.reset_prefix_cache():  # no arm may reuse the other's prompts
                raise RuntimeError("the engine refused to reset its prefix cache")
            t0 = time.perf_counter()
            result = arm()
            return time.perf_counter() - t0, result

        raw_s: list[float] = []
        pipe_s: list[float] = []
        for i in range(passes):
            order = [("raw", raw), ("pipeline", lambda: add_backgrounds(table, spec, 1, backend))]
            for name, arm in order if i % 2 == 0 else order[::-1]:
                seconds, result = timed(arm)
                if name == "raw":
                    raw_s.append(seconds)
                    texts = result
                else:
                    pipe_s.append(seconds)
                    out = result
        same = out["background"].to_pylist() == texts
    raw_mean, pipe_mean = sum(raw_s) / len(raw_s), sum(pipe_s) / len(pipe_s)
    print(f"personas: {n:,}  words: {words}  (tiny random Qwen2 on CPU, vLLM {__import__('vllm').__version__}); "
          f"{passes} passes per arm, alternating, prefix cache reset before each; load {os.getloadavg()[0]:.1f}")
    print(f"raw vLLM (write + read back): {raw_mean:.1f} s  -> {n / raw_mean:,.0f} personas/s  "
          f"(passes: {', '.join(f'{s:.1f}' for s in raw_s)})")
    print(f"pipeline add_backgrounds:     {pipe_mean:.1f} s  -> {n / pipe_mean:,.0f} backgrounds/s  "
          f"(passes: {', '.join(f'{s:.1f}' for s in pipe_s)})")
    print(f"efficiency (raw / pipeline):  {raw_mean / pipe_mean:.3f}   texts identical to raw: {same}")
    print(f"contradiction rate: {contradiction_rates(out)}")


if __name__ == "__main__":
    main()
