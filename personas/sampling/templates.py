"""Templated text columns, rendered column-wise with pyarrow (no per-row Python).

A template is ``str.format`` syntax restricted to plain field names and optional format specs;
categorical fields are formatted once per category and gathered, numeric fields once per
distinct value, then all pieces are joined element-wise in Arrow.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.personas.sampling.errors import SpecError


@dataclass(frozen=True)
class Piece:
    literal: str
    field: str | None = None
    format_spec: str = ""


def parse_template(template: str, path: str) -> list[Piece]:
    """Split a template into literal text and field references, refusing what we cannot render."""
    pieces: list[Piece] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise SpecError(path, f"malformed template: {exc}") from None
    for literal, field, format_spec, conversion in parsed:
        if literal:
            pieces.append(Piece(literal))
        if field is None:
            continue
        if not field or not field.isidentifier():
            raise SpecError(path, f"template field {{{field}}} must be an attribute name")
        if conversion:
            raise SpecError(path, f"conversions such as !{conversion} are not supported")
        if format_spec and "{" in format_spec:
            raise SpecError(path, "nested fields in format specs are not supported")
        pieces.append(Piece("", field, format_spec or ""))
    return pieces


def format_column(values: np.ndarray, format_spec: str) -> pa.Array:
    """Format a numeric column as strings, once per distinct value."""
    if not format_spec and values.dtype.kind in "iu":
        return pa.array(values).cast(pa.string())
    uniques, inverse = np.unique(values, return_inverse=True)
    spec = format_spec or "g"
    labels = pa.array([format(v.item(), spec) for v in uniques], type=pa.string())
    return labels.take(pa.array(inverse.reshape(-1), type=pa.int64()))


def join_pieces(parts: list[pa.Array | str], length: int) -> pa.Array:
    """Concatenate string arrays and literals element-wise."""
    arrays = [p for p in parts if isinstance(p, pa.Array)]
    if not arrays:
        return pa.array(["".join(p for p in parts if isinstance(p, str))] * length, type=pa.string())
    args = [pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*args, pa.scalar("", pa.string()))
