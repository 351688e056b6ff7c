"""``ranking``: the options in order of preference, best first (``top_k`` ranks only the best
k). Stored as ``list<string>`` of canonical labels."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from crowdlab.experiments.answers.base import AnswerField, codes_to_causes
from crowdlab.experiments.answers.options import (
    check_labels, checked_items, extract_list, labels_list_array,
)


class RankingAnswer(AnswerField):
    type: Literal["ranking"] = "ranking"
    type_name = "ranking"
    options: list[str] = Field(min_length=2)
    top_k: int | None = Field(None, ge=1)

    @field_validator("options")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        return check_labels(labels)

    @model_validator(mode="after")
    def _k(self) -> "RankingAnswer":
        if self.top_k is not None and self.top_k > len(self.options):
            raise ValueError(f"top_k ({self.top_k}) exceeds the number of options ({len(self.options)})")
        return self

    @property
    def k(self) -> int:
        return self.top_k or len(self.options)

    def json_schema(self) -> dict[str, Any]:
        return {"type": "array", "items": {"type": "string", "enum": list(self.options)},
                "minItems": self.k, "maxItems": self.k, "uniqueItems": True}

    def arrow_type(self) -> pa.DataType:
        return pa.list_(pa.string())

    def extract(self, texts: pa.Array, name: str, only_field: bool) -> pa.Array:
        return extract_list(texts, name)

    def convert(self, raw: pa.Array) -> tuple[pa.Array, np.ndarray]:
        rows, idx, counts, missing, unknown, dup = checked_items(raw, self.options)
        codes = np.select([missing, unknown, dup, counts != self.k], [1, 2, 3, 4], 0)
        causes = (None, "unparseable", "unknown_option", "duplicate_option", "incomplete_ranking")
        return labels_list_array(rows, idx, counts, codes == 0, self.options), codes_to_causes(codes, causes)

    def option_labels(self) -> list[str]:
        return list(self.options)

    def format_hint(self) -> str:
        return f"a list ranking {'the best ' + str(self.k) + ' of ' if self.top_k else ''}" + \
            ", ".join(f'"{o}"' for o in self.options) + ", best first"

    @classmethod
    def example(cls) -> "RankingAnswer":
        return cls(question="Rank these policies", options=["tax", "subsidy", "ban"])
