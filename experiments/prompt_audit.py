"""The prompt audit trail: every decision row names the exact prompt it answered.

A prompt is the chat an agent was sent (a list of ``{"role", "content"}`` messages). Each
distinct message is stored once, keyed by ``message_hash`` = the first 32 hex digits of
SHA-256 over ``role + "\\0" + content``; each distinct prompt is stored once as the ordered list of
its message hashes, keyed by ``prompt_hash`` = the first 32 hex digits of SHA-256 over those
hashes joined by ``"\\0"``. So the shared system part of a thousand agents' chats is one row,
and two identical chats anywhere in a run have the same hash.

Per shard-round, next to the decisions file and written the same way (temp file + rename,
before the decisions file, whose existence marks the shard done):

- ``prompts/<c>/replicate-<r>/round-<k>/shard-<s>.parquet``: ``prompt_hash``, ``message_hashes``;
- ``prompt_messages/<c>/replicate-<r>/round-<k>/shard-<s>.parquet``: ``message_hash``, ``role``,
  ``content``.

Hashing runs once per distinct message and distinct prompt (deduplicated with Arrow first);
backends that take no prompts (behavioural and formula baselines) leave ``prompt_hash`` null and
write no prompt files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.experiments.schema import prompt_messages_schema, prompts_schema

#: Hex digits kept of each SHA-256 (128 bits: no collision in any run that fits on a disk).
HASH_CHARS = 32
_SEP = "\x00"


def _digest(texts: Sequence[str]) -> np.ndarray:
    return np.array([hashlib.sha256(t.encode("utf-8")).hexdigest()[:HASH_CHARS] for t in texts], dtype=object)


def prompt_tables(messages: Sequence[Sequence[dict[str, str]]]) -> tuple[pa.Array, pa.Table, pa.Table]:
    """The prompt hash of every chat in ``messages`` (in order) and the two tables that store
    the distinct prompts and messages (see the module docstring).

    Deduplication comes first, through dictionaries keyed by the message texts: a system prompt
    shared by every chat is one string object whose hash Python caches, so it costs one lookup
    per chat, never a copy or a SHA-256 per agent. Hashing then runs once per distinct text."""
    n = len(messages)
    distinct: dict[tuple[str, str], int] = {}
    chats: dict[tuple[int, ...], int] = {}
    chat_of = np.empty(n, dtype=np.int64)
    for i, chat in enumerate(messages):
        key = tuple([distinct.setdefault((m["role"], m["content"]), len(distinct)) for m in chat])
        chat_of[i] = chats.setdefault(key, len(chats))
    if not distinct:
        return pa.nulls(n, pa.string()), prompts_schema().empty_table(), prompt_messages_schema().empty_table()
    pairs = list(distinct)
    msg_hashes = _digest([f"{role}{_SEP}{content}" for role, content in pairs])
    chat_keys = list(chats)
    prompt_hashes = _digest([_SEP.join(msg_hashes[list(key)]) for key in chat_keys])
    lengths = np.fromiter((len(k) for k in chat_keys), dtype=np.int64, count=len(chat_keys))
    flat = np.fromiter((j for key in chat_keys for j in key), dtype=np.int64, count=int(lengths.sum()))
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    prompts = pa.Table.from_arrays(
        [pa.array(prompt_hashes, pa.string()), pa.ListArray.from_arrays(offsets, pa.array(msg_hashes[flat], pa.string()))],
        schema=prompts_schema())
    prompt_messages = pa.Table.from_arrays(
        [pa.array(msg_hashes, pa.string()), pa.array([r for r, _ in pairs], pa.string()),
         pa.array([c for _, c in pairs], pa.string())], schema=prompt_messages_schema())
    hashes = pa.array(prompt_hashes[chat_of], pa.string())
    if any(len(chat) == 0 for chat in messages):  # an empty chat has no prompt
        hashes = pc.if_else(pa.array([len(chat) > 0 for chat in messages]), hashes, pa.scalar(None, pa.string()))
    return hashes, prompts, prompt_messages


def merge_prompt_tables(parts: Sequence[tuple[pa.Table | None, pa.Table | None]]
                        ) -> tuple[pa.Table | None, pa.Table | None]:
    """One shard's prompt tables from per-model parts, each distinct hash once."""
    prompts = [p for p, _ in parts if p is not None]
    messages = [m for _, m in parts if m is not None]
    if not prompts:
        return None, None
    return _distinct(pa.concat_tables(prompts), "prompt_hash"), _distinct(pa.concat_tables(messages), "message_hash")


def _distinct(table: pa.Table, key: str) -> pa.Table:
    keys = table[key].combine_chunks()
    first = np.unique(pc.dictionary_encode(keys).indices.to_numpy(zero_copy_only=False), return_index=True)[1]
    return table.take(pa.array(np.sort(first)))


__all__ = ["HASH_CHARS", "merge_prompt_tables", "prompt_tables"]
