"""Labelled options: ``choice`` (exactly one) and ``multi_choice`` (a set, with optional
minimum and maximum counts). Stored as ``dictionary<int32, string>`` (choice) and
``list<string>`` (multi-choice, labels in option order as written by the agent)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from crowdlab.experiments.answers.base import AnswerField, codes_to_causes, json_string_value
from crowdlab.experiments.answers.options import (
    check_labels, checked_items, extract_list, label_index, labels_list_array,
)


class ChoiceAnswer(AnswerField):
    """One of ``options``; free text may be ``"name": "label"`` or, alone, just the label."""

    type: Literal["choice"] = "choice"
    type_name = "choice"
    options: list[str] = Field(min_length=2)

    @field_validator("options")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        return check_labels(labels)

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.options)}

    def arrow_type(self) -> pa.DataType:
        return pa.dictionary(pa.int32(), pa.string())

    def extract(self, texts: pa.Array, name: str, only_field: bool) -> pa.Array:
        found = json_string_value(texts, name)
        if only_field:
            found = pc.coalesce(found, texts)  # the whole answer is the label
        return found

    def convert(self, raw: pa.Array) -> tuple[pa.Array, np.ndarray]:
        idx = label_index(raw, self.options)
        codes = np.where(idx >= 0, 0, np.where(idx == -1, 2, 1))
        typed = pa.DictionaryArray.from_arrays(
            pa.array(np.where(idx >= 0, idx, 0).astype(np.int32), mask=idx < 0), pa.array(self.options, pa.string()))
        return typed, codes_to_causes(codes, (None, "unparseable", "unknown_option"))

    def option_labels(self) -> list[str]:
        return list(self.options)

    def format_hint(self) -> str:
        return "one of " + ", ".join(f'"{o}"' for o in self.options)

    @classmethod
    def example(cls) -> "ChoiceAnswer":
        return cls(question="Do you accept the offer?", options=["accept", "reject"])


class MultiChoiceAnswer(AnswerField):
    """Any subset of ``options`` with ``min_selections`` to ``max_selections`` items."""

    type: Literal["multi_choice"] = "multi_choice"
    type_name = "multi_choice"
    options: list[str] = Field(min_length=1)
    min_selections: int = Field(0, ge=0)
    max_selections: int | None = Field(None, ge=1)

    @field_validator("options")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        return check_labels(labels)

    @model_validator(mode="after")
    def _counts(self) -> "MultiChoiceAnswer":
        top = self.max_selections if self.max_selections is not None else len(self.options)
        if self.min_selections > top or top > len(self.options):
            raise ValueError(f"need min_selections ({self.min_selections}) <= max_selections ({top}) "
                             f"<= number of options ({len(self.options)})")
        return self

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "items": {"type": "string", "enum": list(self.options)},
                               "uniqueItems": True}
        if self.min_selections:
            out["minItems"] = self.min_selections
        if self.max_selections is not None:
            out["maxItems"] = self.max_selections
        return out

    def arrow_type(self) -> pa.DataType:
        return pa.list_(pa.string())

    def extract(self, texts: pa.Array, name: str, only_field: bool) -> pa.Array:
        return extract_list(texts, name)

    def convert(self, raw: pa.Array) -> tuple[pa.Array, np.ndarray]:
        rows, idx, counts, missing, unknown, dup = checked_items(raw, self.options)
        top = self.max_selections if self.max_selections is not None else len(self.options)
        codes = np.select([missing, unknown, dup, counts < self.min_selections, counts > top],
                          [1, 2, 3, 4, 5], 0)
        causes = (None, "unparseable", "unknown_option", "duplicate_option", "too_few", "too_many")
        return labels_list_array(rows, idx, counts, codes == 0, self.options), codes_to_causes(codes, causes)

    def option_labels(self) -> list[str]:
        return list(self.options)

    def format_hint(self) -> str:
        return "a list of any of " + ", ".join(f'"{o}"' for o in self.options)

    @classmethod
    def example(cls) -> "MultiChoiceAnswer":
        return cls(question="Which do you use?", options=["bus", "bike", "car"], max_selections=2)
