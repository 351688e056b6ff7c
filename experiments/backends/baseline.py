"""A non-LLM baseline for declarative scenarios: each answer field from a formula.

The scenario declares ``baseline: {fields: {name: formula}}`` (see
``scenarios/declarative_params.Baseline``); this backend evaluates those formulas over the
round's context (parameters, ``round``, ``last_<value>`` of the agent's group, its own
``own_last_<field>``), vectorised over the batch, and writes the answers as JSON text, so they go
through the same parser and checks as an LLM's. ``uniform()`` and ``normal()`` draw from the
request seed (one stream per call site), so a decision depends only on its seed. Choice fields
take an option index (0-based), scale fields a point.

``multi_choice`` and ``ranking`` fields take one formula per option instead of one per field
(``{option label: formula}``, every option named; see ``option_formulas``):

- ``multi_choice``: each formula is the probability that the option is selected (clipped to
  [0, 1]); each option is drawn on its own from the request seed (stream per field and option).
  When fewer than ``min_selections`` are drawn, the undrawn options with the highest
  probabilities are added; when more than ``max_selections``, the drawn ones with the highest
  probabilities are kept (ties: the smaller draw). Selected labels are written in declaration order.
- ``ranking``: each formula is the option's score; the ranking is the options by score, highest
  first (ties in declaration order), cut to ``top_k``. ``uniform()`` as every score is a seeded
  shuffle; ``base + normal()`` a random-utility (Thurstone) ranking.

A non-finite probability or score makes that agent's answer JSON null (reported unparseable).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.experiments.backends.base import RequestBatch, ResponseBatch
from crowdlab.experiments.backends.settings import BackendSettings
from crowdlab.experiments.seeding import uniforms

_STREAM_BASE, _AGENT_STREAM_BASE = 1000, 50_000
#: Streams of ``agent_uniform(k)``: clear of the numbered ones above.
_NAMED_AGENT_STREAM_BASE = 70_000
#: Streams of the multi-choice selection draws: one per (field, option), clear of the others.
_SELECT_STREAM_BASE, _SELECT_STREAMS_PER_FIELD = 1_000_000, 10_000
#: Answer types whose baseline is one formula per option.
OPTION_FORMULA_TYPES = ("multi_choice", "ranking")


class FormulaBaselineConfig(BackendSettings):
    """Answers from the scenario's ``baseline`` formulas (no settings of its own)."""

    kind: Literal["formula"] = "formula"

    def default_label(self) -> str:
        return "formula-baseline"

    def build(self) -> "FormulaBaselineBackend":
        return FormulaBaselineBackend(self)


def _draws(seeds: np.ndarray, agent_ids: np.ndarray) -> dict[str, Any]:
    """``uniform()``/``normal()`` bound to the batch's seeds, a new stream at every call;
    ``agent_uniform()`` depends on the agent id only, so it is the same in every round (a fixed
    type, e.g. free rider or conditional cooperator). ``agent_uniform(k)`` names its stream: the
    same draw wherever ``k`` is repeated, in one formula or several, so one draw can pick among
    more than two types (``where(agent_uniform(1) < 0.3, a, where(agent_uniform(1) < 0.6, b, c))``)."""
    counter = iter(range(_STREAM_BASE, _STREAM_BASE + 10_000))
    agent_counter = iter(range(_AGENT_STREAM_BASE, _AGENT_STREAM_BASE + 10_000))

    def agent_uniform(stream: Any = None) -> np.ndarray:
        if stream is not None:
            return uniforms(agent_ids, _NAMED_AGENT_STREAM_BASE + int(np.asarray(stream).item()))
        return uniforms(agent_ids, next(agent_counter))

    def uniform() -> np.ndarray:
        return uniforms(seeds, next(counter))

    def normal() -> np.ndarray:
        from scipy import special  # here, not at import: scipy costs every CLI start

        return special.ndtri(np.clip(uniforms(seeds, next(counter)), 1e-12, 1 - 1e-12))

    return {"uniform": uniform, "normal": normal, "agent_uniform": agent_uniform}


def _as_json_value(values: np.ndarray, spec: dict[str, Any]) -> tuple[pa.Array, np.ndarray]:
    """(JSON text of each value for a field of type ``spec['type']``, the number it spells)."""
    kind = spec["type"]
    finite = np.isfinite(values)
    if kind in ("choice",):
        labels = np.array(spec["options"], dtype=object)
        idx = np.clip(np.nan_to_num(values, nan=0).astype(np.int64), 0, len(labels) - 1)
        text = pc.binary_join_element_wise('"', pa.array(labels[idx], pa.string()), '"', "")
        return pc.if_else(pa.array(~finite), "null", text), np.full(values.shape, np.nan)
    if kind in ("integer", "likert", "linear_scale"):
        number = np.round(np.nan_to_num(values))
        text = pc.cast(pa.array(number.astype(np.int64)), pa.string())
    else:
        number = np.round(np.nan_to_num(values), 4)
        text = pc.cast(pa.array(number), pa.string())
    # no value: JSON null, which the parser reports as unparseable
    return pc.if_else(pa.array(~finite), "null", text), np.where(finite, number, np.nan)


def _option_matrix(sources: Mapping[str, str], options: list[str], env: dict[str, Any],
                   draws: dict[str, Any], n: int) -> np.ndarray:
    """(n, options) values of the per-option formulas, in declaration order."""
    from crowdlab.experiments.scenarios.formula import Formula  # scenarios import backends

    out = np.empty((n, len(options)))
    for j, option in enumerate(options):
        formula = Formula(sources[option], allowed=env, functions=draws)
        out[:, j] = np.broadcast_to(np.asarray(formula(env), dtype=np.float64), (n,))
    return out


def select_options(p: np.ndarray, u: np.ndarray, low: int, high: int) -> np.ndarray:
    """(n, m) bool: option j selected when ``u < p``; then the count clipped into [low, high]:
    drawn options before the others, each group by probability (highest first), then by draw
    (smallest first), so a probability-1 option stays and a probability-0 one comes last."""
    p = np.clip(np.nan_to_num(p, nan=0.0), 0.0, 1.0)
    drawn = u < p
    count = np.clip(drawn.sum(axis=1), low, high)
    order = np.lexsort((u, -p, ~drawn), axis=-1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(p.shape[1])[None, :].repeat(p.shape[0], axis=0), axis=1)
    return rank < count[:, None]


def rank_options(scores: np.ndarray, k: int) -> np.ndarray:
    """(n, k) option indices by score, highest first; ties keep declaration order."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _json_lists(rows: np.ndarray, idx: np.ndarray, counts: np.ndarray, options: list[str],
                ok: np.ndarray) -> pa.Array:
    """JSON list text per row (``["a", "b"]``; ``null`` where not ``ok``) from flat (row, option)
    pairs in row order."""
    quoted = pa.array([json.dumps(o) for o in options], pa.string())
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    items = pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32)), quoted).cast(pa.string())
    lists = pa.ListArray.from_arrays(pa.array(offsets), items)
    text = pc.binary_join_element_wise("[", pc.binary_join(lists, ", "), "]", "")
    return pc.if_else(pa.array(~ok), "null", text)


def _list_answer(sources: Mapping[str, str], spec: dict[str, Any], env: dict[str, Any], draws: dict[str, Any],
                 seeds: np.ndarray, field_index: int) -> pa.Array:
    """JSON text of a multi_choice or ranking answer per agent from its per-option formulas."""
    options = list(spec["options"])
    n, m = seeds.shape[0], len(options)
    values = _option_matrix(sources, options, env, draws, n)
    ok = np.isfinite(values).all(axis=1)
    if spec["type"] == "ranking":
        k = int(spec.get("top_k") or m)
        idx = rank_options(np.nan_to_num(values, nan=-np.inf), k)
        return _json_lists(np.repeat(np.arange(n), k), idx.ravel(), np.full(n, k), options, ok)
    base = _SELECT_STREAM_BASE + field_index * _SELECT_STREAMS_PER_FIELD
    u = np.column_stack([uniforms(seeds, base + j) for j in range(m)]) if n else np.empty((0, m))
    high = spec.get("max_selections")
    chosen = select_options(values, u, int(spec.get("min_selections") or 0), m if high is None else int(high))
    rows, idx = np.nonzero(chosen)  # row-major: each row's options in declaration order
    return _json_lists(rows, idx, chosen.sum(axis=1), options, ok)


class FormulaBaselineBackend:
    name = "formula"
    needs_prompts = False

    def __init__(self, config: FormulaBaselineConfig) -> None:
        self.config = config

    def generate(self, batch: RequestBatch) -> ResponseBatch:
        from crowdlab.experiments.scenarios.formula import Formula  # scenarios import backends

        start = time.perf_counter()
        n = len(batch)
        ctx = batch.context
        baseline: dict[str, Any] | None = ctx.get("baseline")
        if not baseline or not baseline.get("fields"):
            raise ValueError(f"scenario {ctx.get('scenario')!r} declares no 'baseline' formulas for backend "
                             "kind 'formula'")
        env = {k: v for k, v in ctx.items() if isinstance(v, (int, float, np.ndarray)) and not isinstance(v, bool)}
        env.update(baseline.get("parameters", {}))
        specs = ctx["answer_fields"]
        parts: list[pa.Array] = []
        draws = _draws(batch.seeds, batch.agent_ids)
        primary = None
        for field_index, (name, source) in enumerate(baseline["fields"].items()):
            if isinstance(source, Mapping):  # multi_choice / ranking: one formula per option
                text = _list_answer(source, specs[name], env, draws, np.asarray(batch.seeds), field_index)
                key = pa.array([f'"{name}": '] * n, pa.string())
                parts.append(pc.binary_join_element_wise(key, text, ""))
                continue
            formula = Formula(source, allowed=env, functions=draws)
            values = np.broadcast_to(np.asarray(formula(env), dtype=np.float64), (n,))
            text, number = _as_json_value(values, specs[name])
            if name == ctx.get("primary"):
                primary = number  # what parsing the text gives back, without parsing it
            key = pa.array([f'"{name}": '] * n, pa.string())
            parts.append(pc.binary_join_element_wise(key, text, ""))
        body = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, ", ")
        texts = pc.binary_join_element_wise("{", body, "}", "").to_pylist()
        elapsed = time.perf_counter() - start
        return ResponseBatch(texts=texts, input_tokens=np.zeros(n, np.int64), output_tokens=np.zeros(n, np.int64),
                             latency_s=np.full(n, elapsed / max(n, 1)), errors=[None] * n, values=primary)

    def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, **self.config.model_dump(mode="json")}
