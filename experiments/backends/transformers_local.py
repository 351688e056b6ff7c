"""Plain Hugging Face ``generate`` backend for small local models on machines without vLLM.

No structured output here: the scenario's tolerant parser reads the free text. Prompts are
batched with left padding (decoder-only models continue from the right edge) and rendered with
the model's chat template. Sampling is seeded per mini-batch from its first request's seed, so
a shard reproduces exactly when it is batched the same way (``batch_size`` is in the manifest).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Literal

import numpy as np
from pydantic import Field

from crowdlab.experiments.backends.settings import LocalModelSettings
from crowdlab.experiments.backends.base import RequestBatch, ResponseBatch
from crowdlab.experiments.backends.model_ref import (
    BackendError,
    ResolvedModel,
    load_chat_template,
    require_chat_template,
    resolve_model,
)

logger = logging.getLogger(__name__)


class TransformersBackendConfig(LocalModelSettings):
    """Options of the Hugging Face transformers backend."""

    kind: Literal["transformers"] = "transformers"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1, mps")
    batch_size: int = Field(16, ge=1, description="prompts per generate() call")

    def build(self) -> "TransformersBackend":
        return TransformersBackend(self)


_MODELS: dict[tuple[str, str | None, str, str], tuple[Any, Any]] = {}
_MODELS_LOCK = threading.Lock()


def _load(model: ResolvedModel, revision: str | None, dtype: str, device: str) -> tuple[Any, Any]:
    """Load (tokenizer, model) once per process and options, like the vLLM engine cache."""
    key = (model.load_from, revision, dtype, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(
                    model.load_from, revision=revision, padding_side="left"
                )
                lm = AutoModelForCausalLM.from_pretrained(model.load_from, revision=revision, dtype=dtype)
            except Exception as exc:
                raise BackendError(f"transformers could not load model {model.ref!r}: {exc}") from exc
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            _MODELS[key] = (tokenizer, lm.to(device).eval())
        return _MODELS[key]


class TransformersBackend:
    """Batched ``model.generate`` with left padding and the chat template."""

    needs_prompts = True

    def __init__(self, config: TransformersBackendConfig) -> None:
        self.config = config
        self.name = config.display_label()
        self._model = resolve_model(config.model, config.revision)
        require_chat_template(self._model, config.chat_template)
        self._chat_template = load_chat_template(config.chat_template)
        self._loaded: tuple[Any, Any] | None = None

    def _tokenizer_and_model(self) -> tuple[Any, Any]:
        if self._loaded is None:
            self._loaded = _load(self._model, self.config.revision, self.config.dtype, self.config.device)
        return self._loaded

    def generate(self, batch: RequestBatch) -> ResponseBatch:
        """Generate mini-batch by mini-batch; a failing mini-batch becomes error rows, not a crash."""
        if batch.messages is None:
            raise ValueError("the transformers backend needs RequestBatch.messages")
        n = len(batch)
        texts: list[str] = [""] * n
        errors: list[str | None] = [None] * n
        input_tokens = np.zeros(n, dtype=np.int64)
        output_tokens = np.zeros(n, dtype=np.int64)
        latency = np.zeros(n, dtype=np.float64)
        truncated = np.zeros(n, dtype=bool)
        size = self.config.batch_size
        for start in range(0, n, size):
            stop = min(start + size, n)
            began = time.perf_counter()
            try:
                out = self._generate_chunk(batch, start, stop)
                (texts[start:stop], input_tokens[start:stop], output_tokens[start:stop],
                 truncated[start:stop]) = out
            except Exception as exc:
                logger.exception("transformers generate failed (%s)", self.config.model)
                errors[start:stop] = [f"transformers error ({self.config.model}): {exc}"] * (stop - start)
            latency[start:stop] = (time.perf_counter() - began) / (stop - start)
        return ResponseBatch(texts, input_tokens, output_tokens, latency, errors, truncated=truncated)

    def _generate_chunk(self, batch: RequestBatch, start: int, stop: int) -> tuple[list[str], Any, Any, Any]:
        import torch

        tokenizer, model = self._tokenizer_and_model()
        assert batch.messages is not None
        prompts = tokenizer.apply_chat_template(
            batch.messages[start:stop],
            chat_template=self._chat_template,
            add_generation_prompt=True,
            tokenize=False,
        )
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = encoded.to(model.device)
        s = batch.sampling
        sample = s.temperature > 0
        torch.manual_seed(int(batch.seeds[start]))
        with torch.no_grad():
            generated = model.generate(
                **encoded,
                max_new_tokens=s.max_tokens,
                do_sample=sample,
                temperature=s.temperature if sample else None,
                top_p=s.top_p if sample else None,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = generated[:, encoded["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        prompt_lengths = encoded["attention_mask"].sum(dim=1).cpu().numpy()
        ends = (new_tokens != tokenizer.pad_token_id) & (new_tokens != tokenizer.eos_token_id)
        # Cut off: the whole max_new_tokens budget was used and no stop token came.
        stop_ids = model.generation_config.eos_token_id
        stop_ids = [tokenizer.eos_token_id, *(stop_ids if isinstance(stop_ids, list) else [stop_ids])]
        stopped = torch.isin(new_tokens, torch.tensor([t for t in stop_ids if t is not None])).any(dim=1)
        truncated = (~stopped) & (new_tokens.shape[1] >= s.max_tokens)
        return texts, prompt_lengths, ends.sum(dim=1).cpu().numpy(), truncated.cpu().numpy()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "transformers",
            "name": self.name,
            "model": self.config.model,
            "revision": self._model.revision,
            "dtype": self.config.dtype,
            "device": self.config.device,
            "batch_size": self.config.batch_size,
            "chat_template": "custom" if self._chat_template else "model",
        }

    def close(self) -> None:
        """Drop this backend's handle; the loaded model stays cached for reuse in the process."""
        self._loaded = None
