"""Helpers shared by the types that pick among labelled options (choice, multi-choice, ranking).

Labels match case-insensitively after trimming spaces, quotes and a trailing full stop; lists
are read from ``"name": [...]`` and checked with numpy over (row, item) pairs, never per row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.experiments.answers.base import extract, key_pattern, unescape_json

_TRIM = " \t\r\n\"'*`."


def check_labels(labels: list[str]) -> list[str]:
    """Options must be non-empty and distinct (case-insensitively, as the parser compares them)."""
    if not labels:
        raise ValueError("options must not be empty")
    seen: dict[str, str] = {}
    for label in labels:
        if not label.strip():
            raise ValueError("an option label is empty")
        key = label.strip().lower()
        if key in seen:
            raise ValueError(f"duplicate option label {label!r}")
        seen[key] = label
    return labels


def normalise(raw: pa.Array) -> pa.Array:
    return pc.utf8_lower(pc.utf8_trim(raw, _TRIM))


def label_index(raw: pa.Array, labels: list[str]) -> np.ndarray:
    """Index of each raw value in ``labels`` (-1 where unknown, -2 where null)."""
    keys = pa.array([label.strip().lower() for label in labels], pa.string())
    idx = pc.index_in(normalise(raw), value_set=keys).to_numpy(zero_copy_only=False)
    out = np.where(np.isnan(idx.astype(np.float64)), -1, np.nan_to_num(idx.astype(np.float64))).astype(np.int64)
    return np.where(raw.is_null().to_numpy(zero_copy_only=False), -2, out)


def extract_list(texts: pa.Array, name: str) -> pa.Array:
    """The items of ``"name": [...]`` as a list<string> per text (null where absent)."""
    inner = extract(texts, key_pattern(name) + r"\[(?P<v>[^\]]*)\]")
    # quoted items may hold commas ("a, b"): split those between quotes, bare ones on commas
    quoted = pc.match_substring(inner, '"')
    items = pc.if_else(quoted, pc.split_pattern_regex(inner, r'"\s*,\s*"'), pc.split_pattern_regex(inner, r"\s*,\s*"))
    flat = unescape_json(pc.utf8_trim(pc.list_flatten(items), _TRIM))
    offsets = items.offsets
    return pa.ListArray.from_arrays(offsets, flat, mask=inner.is_null())


def list_items(lists: pa.Array, labels: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row of each item, label index of each item (-1 unknown), item count per row); empty
    strings (``[]`` splits to one empty item) are dropped."""
    lists = lists.cast(pa.list_(pa.string())) if not isinstance(lists, pa.ListArray) else lists
    parents = pc.list_parent_indices(lists).to_numpy()
    flat = pc.list_flatten(lists)
    keep = pc.greater(pc.utf8_length(flat), 0).to_numpy(zero_copy_only=False)
    idx = label_index(flat, labels)[keep]
    rows = parents[keep]
    counts = np.bincount(rows, minlength=len(lists))
    return rows, idx, counts


def has_duplicates(rows: np.ndarray, idx: np.ndarray, n_rows: int, n_labels: int) -> np.ndarray:
    """Per row: does any known label appear twice?"""
    known = idx >= 0
    key = rows[known] * (n_labels + 1) + idx[known]
    uniq, counts = np.unique(key, return_counts=True)
    dup = np.zeros(n_rows, dtype=bool)
    dup[uniq[counts > 1] // (n_labels + 1)] = True
    return dup


def checked_items(raw: pa.Array, labels: list[str]) -> tuple[np.ndarray, ...]:
    """``list_items`` of a list field plus its per-row checks: (rows, idx, counts, missing,
    unknown label, duplicate label)."""
    n = len(raw)
    rows, idx, counts = list_items(raw, labels)
    unknown = np.zeros(n, dtype=bool)
    unknown[rows[idx < 0]] = True
    dup = has_duplicates(rows, idx, n, len(labels))
    missing = raw.is_null().to_numpy(zero_copy_only=False)
    return rows, idx, counts, missing, unknown, dup


def labels_list_array(rows: np.ndarray, idx: np.ndarray, counts: np.ndarray, ok: np.ndarray,
                      labels: list[str]) -> pa.Array:
    """list<string> of canonical labels for rows where ``ok`` (null elsewhere)."""
    take = ok[rows]
    kept_counts = np.where(ok, counts, 0)
    offsets = np.concatenate([[0], np.cumsum(kept_counts)]).astype(np.int32)
    values = pa.array(np.array(labels, dtype=object)[idx[take]] if take.any() else [], pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~ok))
