"""Throughput accounting of a run, rebuilt from the stats each decision file carries.

Every shard file holds, in its Parquet key-value metadata, per-model stats of the backend call
that produced it (decisions, tokens, backend seconds, failures, retries, prefix-cache tokens,
which engine). Summing them at the end works the same whoever ran the shards (local threads,
Ray actors, Prefect tasks) and across resumed attempts.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from crowdlab.experiments.shard_step import read_shard_stats

_SUMMED = ("decisions", "input_tokens", "output_tokens", "backend_s", "failures", "retries")


def _rate(num: float, seconds: float) -> float | None:
    return round(num / seconds, 3) if seconds > 0 else None


def summarise(run_dir: str | Path, wall_s: float | None) -> dict[str, Any]:
    """Per model: totals, run-level rate, per-engine rates (per second of backend calls) and
    prefix-cache hit rate where the engine reports one; ``engines`` breaks it down per engine."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    engines: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    for path in sorted(Path(run_dir, "decisions").rglob("shard-*.parquet")):
        for label, s in read_shard_stats(path).items():
            t = totals[label]
            for key in _SUMMED:
                t[key] += float(s.get(key) or 0.0)
            if s.get("cached_tokens") is not None:
                t["cached_tokens"] += float(s["cached_tokens"])
                t["cache_prompt_tokens"] += float(s.get("prompt_tokens") or 0.0)
            e = engines[label][str(s.get("engine", "unknown"))]
            e["decisions"] += float(s.get("decisions") or 0)
            e["busy_s"] += float(s.get("backend_s") or 0.0)
    out: dict[str, Any] = {}
    for label, t in totals.items():
        busy = t["backend_s"]
        tokens = t["input_tokens"] + t["output_tokens"]
        out[label] = {
            "decisions": int(t["decisions"]), "input_tokens": int(t["input_tokens"]),
            "output_tokens": int(t["output_tokens"]), "failures": int(t["failures"]),
            "retries": int(t["retries"]), "wall_s": wall_s, "engine_busy_s": round(busy, 3),
            "engines": len(engines[label]),
            "decisions_per_s": _rate(t["decisions"], wall_s or 0.0),
            "decisions_per_s_per_engine": _rate(t["decisions"], busy),
            "tokens_per_s_per_engine": _rate(tokens, busy),
            "output_tokens_per_s_per_engine": _rate(t["output_tokens"], busy),
            "prefix_cache_hit_rate": (round(t["cached_tokens"] / t["cache_prompt_tokens"], 4)
                                      if t["cache_prompt_tokens"] > 0 else None),
            "per_engine": {name: {"decisions": int(e["decisions"]), "busy_s": round(e["busy_s"], 3),
                                  "decisions_per_s": _rate(e["decisions"], e["busy_s"])}
                           for name, e in sorted(engines[label].items())},
        }
    return out
