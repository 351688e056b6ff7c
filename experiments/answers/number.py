"""Numbers: ``number`` (a float, optionally bounded) and ``integer`` (a whole number).

Free text is read with the rules of the beauty contest's parser, keyed on the field's name:
``"name": 33`` (also ``'name'``, ``name =``) first; when the answer has only this field, also a
phrase (``my answer is 33``) or a lone number anywhere in the text. Competing numbers with no
keyword are not guessed at.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from crowdlab.experiments.answers.base import NUMBER, AnswerField, codes_to_causes, extract, extract_keyed, key_pattern

_PHRASE = (
    r"(?i)(?:guess|answer|choose|choice|pick|number|select|go with)"
    rf"(?:\s+(?:is|would be|will be|of|:|=))?\s*[:=]?\s*\**\s*(?P<v>{NUMBER})"
)
_CAUSES = (None, "unparseable", "out_of_range", "not_integer")


def extract_number(texts: pa.Array, name: str, only_field: bool) -> pa.Array:
    """Raw number text per answer (null where none could be read with confidence)."""
    found = extract_keyed(texts, name, key_pattern(name) + rf"""["']?(?P<v>{NUMBER})""")
    if not only_field:
        return found
    missing = found.is_null()
    if not pc.any(missing).as_py():  # the usual case: every answer names the field
        return found
    rest = texts.filter(missing)  # the fallbacks run on the answers without the key only
    fallback = extract(rest, _PHRASE)
    single = pc.equal(pc.count_substring_regex(rest, NUMBER), 1)
    lone = pc.if_else(single, extract(rest, rf"(?P<v>{NUMBER})"), pa.scalar(None, pa.string()))
    return pc.replace_with_mask(found, missing, pc.coalesce(fallback, lone))


class NumberAnswer(AnswerField):
    """A number in [low, high] (either bound may be left open)."""

    type: Literal["number"] = "number"
    type_name = "number"
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> "NumberAnswer":
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        return self

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.low is not None:
            out["minimum"] = self.low
        if self.high is not None:
            out["maximum"] = self.high
        return out

    def arrow_type(self) -> pa.DataType:
        return pa.float64()

    def extract(self, texts: pa.Array, name: str, only_field: bool) -> pa.Array:
        return extract_number(texts, name, only_field)

    def _codes(self, values: np.ndarray) -> np.ndarray:
        finite = np.isfinite(values)
        in_range = finite.copy()
        if self.low is not None:
            in_range &= values >= self.low
        if self.high is not None:
            in_range &= values <= self.high
        return np.where(in_range, 0, np.where(finite, 2, 1))

    def convert(self, raw: pa.Array) -> tuple[pa.Array, np.ndarray]:
        values = pc.cast(raw, pa.float64(), safe=False).to_numpy(zero_copy_only=False).astype(np.float64)
        codes = self._codes(values)
        return pa.array(np.where(codes == 0, values, np.nan), pa.float64(), from_pandas=True), \
            codes_to_causes(codes, _CAUSES)

    def numeric(self, typed: pa.Array) -> np.ndarray:
        return pc.cast(typed, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)

    def format_hint(self) -> str:
        lo = "" if self.low is None else f"{self.low:g}"
        hi = "" if self.high is None else f"{self.high:g}"
        return f"a number from {lo} to {hi}" if lo and hi else "a number"

    @classmethod
    def example(cls) -> "NumberAnswer":
        return cls(question="Your guess", low=0, high=100)


class IntegerAnswer(NumberAnswer):
    """A whole number in [low, high]; ``33.5`` is ``not_integer`` (``33.0`` is fine)."""

    type: Literal["integer"] = "integer"  # type: ignore[assignment]
    type_name = "integer"

    def arrow_type(self) -> pa.DataType:
        return pa.int64()

    def json_schema(self) -> dict[str, Any]:
        return {k: int(v) if isinstance(v, float) and v.is_integer() else v
                for k, v in super().json_schema().items()}

    def convert(self, raw: pa.Array) -> tuple[pa.Array, np.ndarray]:
        values = pc.cast(raw, pa.float64(), safe=False).to_numpy(zero_copy_only=False).astype(np.float64)
        codes = self._codes(values)
        codes = np.where((codes == 0) & (values != np.round(values)), 3, codes)
        ok = codes == 0
        typed = pa.array(np.where(ok, values, 0).astype(np.int64), pa.int64(), mask=~ok)
        return typed, codes_to_causes(codes, _CAUSES)

    def format_hint(self) -> str:
        return super().format_hint().replace("a number", "a whole number")

    @classmethod
    def example(cls) -> "IntegerAnswer":
        return cls(question="How many", low=0, high=20)
