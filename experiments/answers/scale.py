"""Ordered scales: ``likert`` (every point labelled) and ``linear_scale`` (low..high, labels on
some points). Stored as the point (int32); the labels live in the declaration and the field's
Arrow metadata. Free text may give the point or, for a labelled point, its label."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from crowdlab.experiments.answers.base import NUMBER, AnswerField, codes_to_causes, extract, key_pattern
from crowdlab.experiments.answers.number import extract_number
from crowdlab.experiments.answers.options import check_labels, label_index

_CAUSES = (None, "unparseable", "out_of_range")


class _Scale(AnswerField):
    def points(self) -> list[int]:
        raise NotImplementedError

    def point_labels(self) -> dict[int, str]:
        raise NotImplementedError

    def json_schema(self) -> dict[str, Any]:
        pts = self.points()
        return {"type": "integer", "minimum": pts[0], "maximum": pts[-1]}

    def arrow_type(self) -> pa.DataType:
        return pa.int32()

    def extract(self, texts: pa.Array, name: str, only_field: bool) -> pa.Array:
        labelled = extract(texts, key_pattern(name) + r'"(?P<v>[^"]*)"')
        number = extract_number(texts, name, only_field)
        if only_field:  # the whole answer may be a label
            labelled = pc.coalesce(labelled, pc.if_else(pc.match_substring_regex(texts, NUMBER), None, texts))
        return pc.coalesce(number, labelled)

    def convert(self, raw: pa.Array) -> tuple[pa.Array, np.ndarray]:
        pts = self.points()
        values = pc.cast(pc.if_else(pc.match_substring_regex(raw, rf"^\s*{NUMBER}\s*$"), raw, None),
                         pa.float64(), safe=False).to_numpy(zero_copy_only=False).astype(np.float64)
        labels = self.point_labels()
        if labels:
            keys = list(labels)
            idx = label_index(raw, list(labels.values()))
            from_label = np.where(idx >= 0, np.array(keys, dtype=np.float64)[np.maximum(idx, 0)], np.nan)
            values = np.where(np.isfinite(values), values, from_label)
        finite = np.isfinite(values)
        ok = finite & (values >= pts[0]) & (values <= pts[-1]) & (values == np.round(values))
        codes = np.where(ok, 0, np.where(finite, 2, 1))
        typed = pa.array(np.where(ok, values, 0).astype(np.int32), pa.int32(), mask=~ok)
        return typed, codes_to_causes(codes, _CAUSES)

    def numeric(self, typed: pa.Array) -> np.ndarray:
        return pc.cast(typed, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)

    def option_labels(self) -> list[str]:
        return [str(p) for p in self.points()]

    def format_hint(self) -> str:
        pts, labels = self.points(), self.point_labels()
        named = "; ".join(f"{p} = {label}" for p, label in labels.items())
        return f"a whole number from {pts[0]} to {pts[-1]}" + (f" ({named})" if named else "")


class LikertAnswer(_Scale):
    """``labels`` on points ``start``, ``start + 1``, ... (e.g. 1 = strongly disagree .. 5)."""

    type: Literal["likert"] = "likert"
    type_name = "likert"
    labels: list[str] = Field(min_length=2)
    start: int = 1

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        return check_labels(labels)

    def points(self) -> list[int]:
        return list(range(self.start, self.start + len(self.labels)))

    def point_labels(self) -> dict[int, str]:
        return dict(zip(self.points(), self.labels))

    @classmethod
    def example(cls) -> "LikertAnswer":
        return cls(question="I trust most people.", labels=["strongly disagree", "disagree", "neutral",
                                                             "agree", "strongly agree"])


class LinearScaleAnswer(_Scale):
    """Whole points ``low``..``high``; ``point_labels`` names some of them (often the ends)."""

    type: Literal["linear_scale"] = "linear_scale"
    type_name = "linear_scale"
    low: int = 0
    high: int = 10
    end_labels: dict[int, str] = Field(default_factory=dict, description="labels of some points")

    @model_validator(mode="after")
    def _bounds(self) -> "LinearScaleAnswer":
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        outside = [p for p in self.end_labels if not self.low <= p <= self.high]
        if outside:
            raise ValueError(f"end_labels name point(s) {outside} outside {self.low}..{self.high}")
        check_labels(list(self.end_labels.values())) if self.end_labels else None
        return self

    def points(self) -> list[int]:
        return list(range(self.low, self.high + 1))

    def point_labels(self) -> dict[int, str]:
        return dict(sorted(self.end_labels.items()))

    @classmethod
    def example(cls) -> "LinearScaleAnswer":
        return cls(question="How happy are you?", low=0, high=10, end_labels={0: "not at all", 10: "completely"})
