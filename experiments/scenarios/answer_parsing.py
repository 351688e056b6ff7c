"""Tolerant, vectorised extraction of one number from free-text answers.

Backends with structured output return clean JSON; the others return anything from
``{"guess": 33}`` in a code fence to ``My guess is 33.`` or a paragraph of reasoning. Rules, in
order (first hit wins), all run as pyarrow.compute regex kernels over the whole batch:

1. a JSON-style ``"guess": <number>`` (also ``'guess'`` or bare ``guess:``);
2. a phrase such as ``my guess is 33``, ``answer: 33``, ``I choose 33``, ``number = 33``;
3. the answer holds exactly one number anywhere (``33``, ``**33**``, a fenced ``33``).

Anything else is unparseable (NaN); several competing numbers with no keyword are not guessed at.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_JSON_KEY = rf"""(?i)["']?guess["']?\s*[:=]\s*["']?(?P<v>{NUMBER})"""
_PHRASE = (
    r"(?i)(?:guess|answer|choose|choice|pick|number|select|go with)"
    rf"(?:\s+(?:is|would be|will be|of|:|=))?\s*[:=]?\s*\**\s*(?P<v>{NUMBER})"
)
_ANY_NUMBER = rf"(?P<v>{NUMBER})"


def _extract(texts: pa.Array, pattern: str) -> pa.Array:
    """Group ``v`` of the first match of ``pattern`` (null where it does not match)."""
    return pc.struct_field(pc.extract_regex(texts, pattern), [0])


def parse_numbers(texts: list[str] | pa.Array) -> np.ndarray:
    """One float per text; NaN where no number could be read with confidence."""
    arr = texts if isinstance(texts, pa.Array) else pa.array(texts, type=pa.string())
    arr = pc.fill_null(arr, "")
    found = _extract(arr, _JSON_KEY)
    found = pc.coalesce(found, _extract(arr, _PHRASE))
    single = pc.equal(pc.count_substring_regex(arr, NUMBER), 1)
    lone = pc.if_else(single, _extract(arr, _ANY_NUMBER), pa.scalar(None, pa.string()))
    found = pc.coalesce(found, lone)
    # "33." is a valid float for the cast; a trailing sentence dot is fine.
    values = pc.cast(found, pa.float64(), safe=False)
    return values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


_REASONING = r"""(?s)["']?reasoning["']?\s*:\s*"(?P<v>(?:[^"\\]|\\.)*)"""


def extract_reasoning(texts: list[str] | pa.Array, max_chars: int) -> pa.Array:
    """The reasoning of each answer as one short line: the JSON ``"reasoning"`` string, else the
    free text around any JSON object; whitespace runs become one space, and a text longer than ``max_chars`` is
    cut there with ``...`` added. Empty string where there is none (null texts included)."""
    arr = texts if isinstance(texts, pa.Array) else pa.array(texts, type=pa.string())
    arr = pc.fill_null(arr, "")
    found = pc.coalesce(_extract(arr, _REASONING), pc.replace_substring_regex(arr, r"\{[^{}]*\}", ""))
    found = pc.replace_substring_regex(found, r"\\[nrt]", " ")  # JSON escapes: \n -> space, \" -> "
    found = pc.replace_substring_regex(found, r"\\(.)", r"\1")
    one_line = pc.utf8_trim_whitespace(pc.replace_substring_regex(found, r"\s+", " "))
    cut = pc.greater(pc.utf8_length(one_line), max_chars)
    short = pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(one_line, 0, max_chars))
    return pc.if_else(cut, pc.binary_join_element_wise(short, "...", ""), one_line)
