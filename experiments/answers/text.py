"""Free text: ``text`` (an answer with a length cap) and ``reasoning`` (optional by default,
placed first in the JSON schema so a model reasons before it answers)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from crowdlab.experiments.answers.base import AnswerField, codes_to_causes, json_string_value


class TextAnswer(AnswerField):
    """Up to ``max_chars`` characters; longer is ``too_long`` (structured output caps it)."""

    type: Literal["text"] = "text"
    type_name = "text"
    max_chars: int = Field(500, ge=1, le=100_000)

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": self.max_chars}

    def arrow_type(self) -> pa.DataType:
        return pa.string()

    def extract(self, texts: pa.Array, name: str, only_field: bool) -> pa.Array:
        found = json_string_value(texts, name)
        return pc.coalesce(found, pc.utf8_trim_whitespace(texts)) if only_field else found

    def convert(self, raw: pa.Array) -> tuple[pa.Array, np.ndarray]:
        length = pc.fill_null(pc.utf8_length(raw), -1).to_numpy(zero_copy_only=False)
        codes = np.where(length < 0, 1, np.where(length > self.max_chars, 2, 0))
        typed = pc.if_else(pa.array(codes == 0), raw, pa.scalar(None, pa.string()))
        return typed, codes_to_causes(codes, (None, "unparseable", "too_long"))

    def format_hint(self) -> str:
        return f"text, at most {self.max_chars} characters"

    @classmethod
    def example(cls) -> "TextAnswer":
        return cls(question="Why?", max_chars=300)


class ReasoningAnswer(TextAnswer):
    type: Literal["reasoning"] = "reasoning"  # type: ignore[assignment]
    type_name = "reasoning"
    max_chars: int = Field(400, ge=1, le=100_000)
    required: bool = False

    def extract(self, texts: pa.Array, name: str, only_field: bool) -> pa.Array:
        return json_string_value(texts, name)

    def format_hint(self) -> str:
        return f"your reasoning, at most {self.max_chars} characters"

    @classmethod
    def example(cls) -> "ReasoningAnswer":
        return cls(max_chars=400)
