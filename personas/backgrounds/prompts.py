"""Prompt text for writing backgrounds and for reading facts back out of them (version v1).

Both chats are ``[system, user]``: the system message is the same for every persona (so vLLM's
prefix cache shares it) and the user message carries one persona's facts or one text. Messages
are built column-wise with pyarrow, so a shard of 100,000 personas costs no per-row formatting
in Python beyond assembling the message dicts. A prompt's size depends on the persona, never on
the population size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.personas.backgrounds.spec import BackgroundSpec

WRITER_SYSTEM_V1 = (
    "You write short, realistic background texts about people for a survey panel. "
    "Write in the third person, as plain prose in one paragraph, with no heading, no list and no "
    "quotation marks. State every required fact exactly as given (numbers as digits); you may add "
    "ordinary everyday detail, but nothing that contradicts the facts. Output only the text."
)
READER_SYSTEM_V1 = (
    "You read a short text about one person and report what it says about them as JSON. "
    "Copy each fact in the words of the text; write numbers as digits. If the text does not say, "
    "write an empty string (or 0 for numbers)."
)

LANGUAGES = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "ja": "Japanese",
    "pt": "Portuguese", "nl": "Dutch", "pl": "Polish", "sv": "Swedish", "da": "Danish", "fi": "Finnish",
    "no": "Norwegian", "nb": "Norwegian", "cs": "Czech", "ru": "Russian", "uk": "Ukrainian", "tr": "Turkish",
    "zh": "Chinese", "ko": "Korean", "ar": "Arabic", "hi": "Hindi", "el": "Greek", "hu": "Hungarian",
    "ro": "Romanian", "id": "Indonesian", "vi": "Vietnamese", "th": "Thai", "he": "Hebrew", "fa": "Persian",
}


def language_name(locale_or_language: str) -> str:
    """``de_DE`` -> German; a language name passes through unchanged."""
    code = locale_or_language.split("_")[0].split("-")[0].lower()
    return LANGUAGES.get(code, locale_or_language)


def _label(name: str) -> str:
    return name.replace("_", " ")


def _as_text(column: Any) -> pa.Array:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


def writer_messages(table: pa.Table, bg: BackgroundSpec) -> list[list[dict[str, str]]]:
    """One writer chat per persona row of ``table``."""
    n = table.num_rows
    if bg.language_from is not None:
        locales = table.column(bg.language_from).combine_chunks()
        uniques = pc.unique(locales)
        names = pa.array([language_name(v) for v in uniques.to_pylist()], pa.string())
        language: Any = names.take(pc.index_in(locales, value_set=uniques))
    else:
        language = pa.scalar(language_name(bg.language or "en"), pa.string())
    required = ", ".join(_label(m) for m in bg.mention)
    parts: list[Any] = [
        f"Write a background of about {bg.words} words in ",
        language,
        f" about the person below. It must state their {required}.\nFacts:\n",
    ]
    for name in list(bg.mention) + [c for c in bg.context if c not in bg.mention]:
        parts += [f"- {_label(name)}: ", _as_text(table.column(name)), "\n"]
    args = [pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in parts]
    users = pc.binary_join_element_wise(*args, pa.scalar("", pa.string())) if n else pa.array([], pa.string())
    system = {"role": "system", "content": WRITER_SYSTEM_V1}
    return [[system, {"role": "user", "content": u}] for u in users.to_pylist()]


def reader_messages(texts: list[str]) -> list[list[dict[str, str]]]:
    """One reader chat per text."""
    system = {"role": "system", "content": READER_SYSTEM_V1}
    return [[system, {"role": "user", "content": "Text:\n" + t}] for t in texts]


def reader_schema(fields: list[str], numeric: set[str]) -> dict[str, Any]:
    """JSON schema of the reader's answer: one property per gate field."""
    props: dict[str, Any] = {}
    for name in fields:
        props[name] = {"type": "number"} if name in numeric else {"type": "string", "maxLength": 60}
    return {"type": "object", "properties": props, "required": list(fields), "additionalProperties": False}


def empty_mask(texts: list[str]) -> np.ndarray:
    """True where a text is empty or only whitespace."""
    arr = pa.array(texts, pa.string())
    return np.asarray(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(arr)), 0).to_numpy(zero_copy_only=False), dtype=bool)
