"""The consistency gate: do the facts read back out of a background match the persona's row?

The reader (an LLM call with a JSON schema) returns one value per gate field; this module parses
those answers and compares them with the row, tolerantly:

- numbers: within the field's ``tolerance`` (e.g. age +-1), else within ``relative_tolerance``
  of the true value;
- text: case, accents of punctuation and whitespace are ignored (``Master's  Degree`` equals
  ``masters degree``); a value also matches when the answer contains it, or one of its
  ``synonyms``, as whole words (``a PhD in physics`` matches ``doctorate`` given the synonym).

Normalisation and exact equality run column-wise in pyarrow; only the rows that are not equal
outright go through the (linear, tiny-constant) whole-word containment check in Python.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.personas.backgrounds.spec import GateSpec

EMPTY = "empty"
UNREADABLE = "unreadable"


def normalise(values: Any) -> pa.Array:
    """Casefold, drop apostrophes, turn other punctuation into spaces, collapse whitespace."""
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values, pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_string(arr.type):
        arr = pc.cast(arr, pa.string())
    arr = pc.utf8_lower(pc.fill_null(arr, ""))
    arr = pc.replace_substring_regex(arr, r"['’`´]", "")
    arr = pc.replace_substring_regex(arr, r"[^\w]+", " ")
    return pc.utf8_trim_whitespace(arr)


def parse_answers(texts: list[str], fields: list[str], numeric: set[str]) -> tuple[dict[str, list[Any]], np.ndarray]:
    """Reader answers -> one list per field (None where missing) and a parsed-ok mask."""
    out: dict[str, list[Any]] = {f: [None] * len(texts) for f in fields}
    ok = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        try:
            data = json.loads(text, strict=False)  # xgrammar may let raw control characters into strings
        except (TypeError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        ok[i] = True
        for f in fields:
            value = data.get(f)
            if f in numeric:
                value = _number(value)
            elif value is not None and not isinstance(value, str):
                value = str(value)
            out[f][i] = value
    return out, ok


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        digits = "".join(ch for ch in value if ch.isdigit() or ch in ".-")
        try:
            return float(digits)
        except ValueError:
            return None
    return None


def _alternatives(field: str, gate: GateSpec) -> dict[str, list[str]]:
    """normalised value -> normalised spellings that count as that value (itself first)."""
    table = gate.synonyms.get(field, {})
    keys = list(table)
    if not keys:
        return {}
    norm_keys = normalise(keys).to_pylist()
    return {k: [k] + normalise(table[raw]).to_pylist() for raw, k in zip(keys, norm_keys)}


def text_matches(expected: Any, answered: Any, field: str, gate: GateSpec) -> np.ndarray:
    """Tolerant text comparison of two equally long string columns."""
    exp = normalise(expected)
    ans = normalise(answered)
    equal = np.asarray(pc.fill_null(pc.equal(exp, ans), False).to_numpy(zero_copy_only=False), dtype=bool)
    rest = np.flatnonzero(~equal)
    if rest.size == 0:
        return equal
    alts = _alternatives(field, gate)
    exp_rest = exp.take(pa.array(rest)).to_pylist()
    ans_rest = ans.take(pa.array(rest)).to_pylist()
    for j, (e, a) in enumerate(zip(exp_rest, ans_rest)):
        if not a or not e:
            continue
        padded = f" {a} "
        if any(f" {alt} " in padded for alt in alts.get(e, [e]) if alt):
            equal[rest[j]] = True
    return equal


def number_matches(expected: np.ndarray, answered: list[Any], field: str, gate: GateSpec) -> np.ndarray:
    """|answer - truth| within the field's tolerance (absolute, else relative)."""
    exp = np.asarray(expected, dtype=float)
    ans = np.array([np.nan if v is None else v for v in answered], dtype=float)
    if field in gate.tolerance:
        slack = np.full(exp.shape, gate.tolerance[field])
    else:
        slack = gate.relative_tolerance * np.abs(exp)
    with np.errstate(invalid="ignore"):
        return np.abs(ans - exp) <= slack + 1e-9


def compare(
    rows: pa.Table, answers: dict[str, list[Any]], parsed: np.ndarray, fields: list[str], numeric: set[str], gate: GateSpec
) -> tuple[np.ndarray, list[str | None]]:
    """(consistent mask, mismatch description per row: comma-separated field names, or None)."""
    n = rows.num_rows
    bad = np.zeros((len(fields), n), dtype=bool)
    for k, field in enumerate(fields):
        if field in numeric:
            ok = number_matches(rows.column(field).to_numpy(), answers[field], field, gate)
        else:
            ok = text_matches(rows.column(field), pa.array(answers[field], pa.string()), field, gate)
        bad[k] = ~ok
    consistent = parsed & ~bad.any(axis=0)
    mismatch: list[str | None] = [None] * n
    for i in np.flatnonzero(~consistent).tolist():
        mismatch[i] = UNREADABLE if not parsed[i] else ",".join(f for k, f in enumerate(fields) if bad[k, i])
    return consistent, mismatch
