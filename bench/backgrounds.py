"""Benchmark: backgrounds/s through the pipeline vs raw vLLM on the same engine and prompts.

The tiny random CPU model writes N backgrounds (default 10,000) with one gate read each
(max_tries=1, so both sides do exactly two engine calls per persona: write, then read back).
"raw" hands the same messages and sampling params straight to ``vllm.LLM.chat``; "pipeline" is
``add_backgrounds`` (prompt building, seeds, gate parsing and comparison, flags included).
Efficiency = raw seconds / pipeline seconds (target >= 0.9).
Run: .venv/bin/python bench/backgrounds.py [N] [WORDS]
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
from crowdlab.personas import background_prompts as prompts  # noqa: E402
from crowdlab.personas.backgrounds import STREAM_READ, STREAM_WRITE, add_backgrounds, contradiction_rates, numeric_fields  # noqa: E402
from crowdlab.hashing import seeds  # noqa: E402

SPEC = Path(__file__).resolve().parents[1] / "data" / "populations" / "backgrounds_demo.yaml"
TINY = {"gpu_memory_utilization": 0.1, "enforce_eager": True, "max_model_len": 1024, "dtype": "float32"}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    words = int(sys.argv[2]) if len(sys.argv) > 2 else 20
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

        t0 = time.perf_counter()
        write_msgs = prompts.writer_messages(table, bg)
        wparams = [SamplingParams(temperature=bg.temperature, top_p=bg.top_p, max_tokens=bg.token_budget, seed=s)
                   for s in seeds(1, ids, STREAM_WRITE, 1).tolist()]
        outs = engine.chat(write_msgs, wparams, use_tqdm=False, chat_template=None)
        texts = [o.outputs[0].text for o in outs]
        rparams = [SamplingParams(temperature=0.0, max_tokens=bg.gate.max_tokens, seed=s,
                                  structured_outputs=StructuredOutputsParams(json=schema))
                   for s in seeds(1, ids, STREAM_READ, 1).tolist()]
        engine.chat(prompts.reader_messages(texts), rparams, use_tqdm=False, chat_template=None)
        raw_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        out = add_backgrounds(table, spec, 1, backend)
        pipe_s = time.perf_counter() - t0
        same = out["background"].to_pylist() == texts
    print(f"personas: {n:,}  words: {words}  (tiny random Qwen2 on CPU, vLLM {__import__('vllm').__version__})")
    print(f"raw vLLM (write + read back): {raw_s:.1f} s  -> {n / raw_s:,.0f} personas/s")
    print(f"pipeline add_backgrounds:     {pipe_s:.1f} s  -> {n / pipe_s:,.0f} backgrounds/s")
    print(f"efficiency (raw / pipeline):  {raw_s / pipe_s:.3f}   texts identical to raw: {same}")
    print(f"contradiction rate: {contradiction_rates(out)}")


if __name__ == "__main__":
    main()
