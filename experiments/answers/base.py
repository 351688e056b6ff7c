"""What every answer type provides: a pydantic declaration, its JSON-schema fragment, its Arrow
type, a tolerant vectorised parser of free-text answers and a validator with one error cause per
row.

Parsing is two steps so that every type shares the hard part (finding ``"field": ...`` in a
batch of texts with pyarrow regex kernels) and keeps only its own conversion:

* ``extract`` finds the raw value of the field in every text (null where absent);
* ``convert`` turns raw values into the typed Arrow column plus an error cause per row
  (``None`` = valid). A row whose field is invalid holds null in the typed column.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_JSON_STRING = r'"(?P<v>(?:[^"\\]|\\.)*)"'

#: Error causes a field can report (docs/contracts.md lists them with their meaning).
CAUSES = ("unparseable", "out_of_range", "not_integer", "unknown_option", "duplicate_option",
          "too_few", "too_many", "incomplete_ranking", "too_long")


def key_pattern(name: str) -> str:
    """``"name":`` as written in JSON, also ``'name'`` or bare ``name:``/``name =``."""
    return rf"""(?i)["']?{re.escape(name)}["']?\s*[:=]\s*"""


def extract(texts: pa.Array, pattern: str) -> pa.Array:
    """Group ``v`` of the first match of ``pattern`` per text (null where it does not match)."""
    return pc.struct_field(pc.extract_regex(texts, pattern), [0])


def extract_keyed(texts: pa.Array, name: str, pattern: str) -> pa.Array:
    """``extract`` for a pattern that starts with the field's key: the regex runs only on texts
    that hold the key at all (a plain substring search rules the others out cheaply)."""
    has = pc.match_substring(texts, name, ignore_case=True)
    n_has = pc.sum(has).as_py() or 0
    if n_has == len(texts):
        return extract(texts, pattern)
    found = extract(texts.filter(has), pattern) if n_has else pa.array([], pa.string())
    return pc.replace_with_mask(pa.nulls(len(texts), pa.string()), has, found)


def unescape_json(raw: pa.Array) -> pa.Array:
    """The common JSON string escapes (``\\"``, ``\\\\``, ``\\n``, ``\\t``, ``\\/``) undone."""
    out = pc.replace_substring(raw, "\\\\", "\x00")
    for esc, plain in (('\\"', '"'), ("\\n", "\n"), ("\\t", "\t"), ("\\/", "/"), ("\\r", "\r")):
        out = pc.replace_substring(out, esc, plain)
    return pc.replace_substring(out, "\x00", "\\")


def json_string_value(texts: pa.Array, name: str) -> pa.Array:
    """The string value of ``"name": "..."`` (unescaped), null where absent."""
    return unescape_json(extract_keyed(texts, name, key_pattern(name) + _JSON_STRING))


def codes_to_causes(codes: np.ndarray, causes: tuple[str | None, ...]) -> np.ndarray:
    """Object array of cause names from small integer codes (0 = valid = None)."""
    return np.array(causes, dtype=object)[codes]


class AnswerField(BaseModel):
    """Fields every answer type shares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type_name: ClassVar[str]
    question: str = Field("", description="what the field asks, shown in the answer format")
    required: bool = Field(True, description="a missing or invalid value makes the whole answer invalid")

    def json_schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def arrow_type(self) -> pa.DataType:
        raise NotImplementedError

    def extract(self, texts: pa.Array, name: str, only_field: bool) -> pa.Array:
        """Raw value of this field in each text; ``only_field`` allows answers with no key."""
        raise NotImplementedError

    def convert(self, raw: pa.Array) -> tuple[pa.Array, np.ndarray]:
        """(typed column, cause per row as an object array of str or None)."""
        raise NotImplementedError

    def numeric(self, typed: pa.Array) -> np.ndarray | None:
        """The field as float64 for formulas and aggregates (None when it has no number)."""
        return None

    def option_labels(self) -> list[str] | None:
        """Option labels of categorical fields (shares and distributions count these)."""
        return None

    def format_hint(self) -> str:
        """What a valid value looks like, for the answer-format line of a prompt."""
        raise NotImplementedError

    @classmethod
    def example(cls) -> "AnswerField":
        raise NotImplementedError


def all_null(n: int, type_: pa.DataType) -> pa.Array:
    return pa.nulls(n, type=type_)
