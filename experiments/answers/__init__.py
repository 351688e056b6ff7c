"""Typed answers: a scenario declares its answer fields, each with a type, and everything else
follows from that one declaration (the registry below lists the types, one module each):

* ``answer_schema(fields)``: the JSON schema for structured output (compact, no extra keys);
* ``parse_answers(texts, fields)``: typed Arrow columns plus an error cause per field and row,
  from the raw answer texts of any backend (vectorised with pyarrow regex kernels);
* ``answer_arrow_fields(fields)``: the decision-table columns, one per field (``answer_<name>``).

A type is a pydantic model discriminated by ``type``; adding one is a module with the model and
one entry in ``ANSWER_TYPES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Union

import numpy as np
import pyarrow as pa
from pydantic import Field, TypeAdapter

from crowdlab.experiments.answers.base import CAUSES, AnswerField
from crowdlab.experiments.answers.choice import ChoiceAnswer, MultiChoiceAnswer
from crowdlab.experiments.answers.number import IntegerAnswer, NumberAnswer
from crowdlab.experiments.answers.ranking import RankingAnswer
from crowdlab.experiments.answers.scale import LikertAnswer, LinearScaleAnswer
from crowdlab.experiments.answers.text import ReasoningAnswer, TextAnswer

ANSWER_TYPES: tuple[type[AnswerField], ...] = (
    NumberAnswer, IntegerAnswer, ChoiceAnswer, MultiChoiceAnswer, LikertAnswer, LinearScaleAnswer,
    RankingAnswer, TextAnswer, ReasoningAnswer,
)
AnswerType = Annotated[
    Union[NumberAnswer, IntegerAnswer, ChoiceAnswer, MultiChoiceAnswer, LikertAnswer, LinearScaleAnswer,
          RankingAnswer, TextAnswer, ReasoningAnswer],
    Field(discriminator="type"),
]
#: The ``type`` tags (pydantic puts them in error locations; config.py strips them from paths).
ANSWER_TAGS: frozenset[str] = frozenset(t.type_name for t in ANSWER_TYPES)
COLUMN_PREFIX = "answer_"
ERRORS_COLUMN = "answer_errors"

_ADAPTER: TypeAdapter[AnswerField] = TypeAdapter(AnswerType)

Fields = dict[str, AnswerField]


def answer_field(data: dict[str, Any] | AnswerField) -> AnswerField:
    """Validate one field declaration (``{"type": "choice", "options": [...]}``)."""
    return data if isinstance(data, AnswerField) else _ADAPTER.validate_python(data)


def column_name(field: str) -> str:
    return COLUMN_PREFIX + field


def answer_schema(fields: Fields) -> dict[str, Any]:
    """One JSON object with every field, in declaration order, all listed as required so that
    structured output always emits them (optional fields may still be missing in free text)."""
    return {"type": "object", "properties": {name: f.json_schema() for name, f in fields.items()},
            "required": list(fields), "additionalProperties": False}


def answer_arrow_fields(fields: Fields) -> list[pa.Field]:
    """The typed decision columns, with the declaration in each field's metadata."""
    out = []
    for name, f in fields.items():
        meta = {"answer_type": f.type_name, "declaration": f.model_dump_json(exclude_defaults=True)}
        out.append(pa.field(column_name(name), f.arrow_type(), metadata=meta))
    out.append(pa.field(ERRORS_COLUMN, pa.map_(pa.string(), pa.string()),
                        metadata={"meaning": "error cause per invalid field; null when every field is valid"}))
    return out


@dataclass
class ParsedAnswers:
    """Typed columns and error causes of a batch of answers.

    ``causes[name]`` is an object array (cause or None per row); ``valid`` is True where every
    required field is valid; ``error`` is the first invalid required field's cause (None if valid).
    """

    columns: dict[str, pa.Array]
    causes: dict[str, np.ndarray]
    valid: np.ndarray
    error: np.ndarray

    def errors_column(self) -> pa.Array:
        """map<field, cause> per row holding the invalid fields only (null when none)."""
        names = list(self.causes)
        n = len(self.valid)
        if not names:
            return pa.nulls(n, pa.map_(pa.string(), pa.string()))
        causes = np.stack([self.causes[k] for k in names], axis=1)  # (n, fields)
        bad = np.not_equal(causes, None)
        counts = bad.sum(axis=1)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        rows, cols = np.nonzero(bad)
        keys = pa.array(np.array(names, dtype=object)[cols], pa.string())
        items = pa.array(causes[rows, cols], pa.string())
        return pa.MapArray.from_arrays(pa.array(offsets), keys, items, mask=pa.array(counts == 0))


def only_field(fields: Fields, name: str) -> bool:
    """May ``name`` be read from an answer that does not name it (``My guess is 33``)? Yes when
    it is the one field, or the one required field beside an optional one (reasoning)."""
    required = [n for n, f in fields.items() if f.required]
    return len(fields) == 1 or (required == [name] and len(fields) <= 2)


def parse_answers(texts: list[str] | pa.Array, fields: Fields, only: list[str] | None = None) -> ParsedAnswers:
    """Read every field (or the fields named in ``only``) from every text and validate it."""
    arr = texts if isinstance(texts, pa.Array) else pa.array(texts, type=pa.string())
    arr = arr.fill_null("")
    required = [name for name, f in fields.items() if f.required and (only is None or name in only)]
    columns: dict[str, pa.Array] = {}
    causes: dict[str, np.ndarray] = {}
    for name, f in fields.items():
        if only is not None and name not in only:
            continue
        raw = f.extract(arr, name, only_field(fields, name))
        columns[name], causes[name] = f.convert(raw)
        if not f.required:  # an optional field left out is not an error
            causes[name] = np.where(raw.is_null().to_numpy(zero_copy_only=False), None, causes[name])
    n = len(arr)
    error = np.full(n, None, dtype=object)
    for name in reversed(required):  # the first required field's cause wins
        error = np.where(np.not_equal(causes[name], None), causes[name], error)
    valid = np.equal(error, None) if required else np.ones(n, dtype=bool)
    return ParsedAnswers(columns, causes, valid.astype(bool), error)


def example_fields() -> Fields:
    """One field of every type (tests and docs reuse it)."""
    return {t.type_name: t.example() for t in ANSWER_TYPES}


__all__ = [
    "ANSWER_TAGS", "ANSWER_TYPES", "AnswerField", "AnswerType", "CAUSES", "COLUMN_PREFIX", "ERRORS_COLUMN",
    "ChoiceAnswer", "Fields", "IntegerAnswer", "LikertAnswer", "LinearScaleAnswer", "MultiChoiceAnswer",
    "NumberAnswer", "ParsedAnswers", "RankingAnswer", "ReasoningAnswer", "TextAnswer", "answer_arrow_fields",
    "answer_field", "answer_schema", "column_name", "example_fields", "only_field", "parse_answers",
]
