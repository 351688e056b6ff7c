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


def _hash_distinct(keys: pa.Array) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """(indices into the distinct keys, the distinct keys, their hashes) of a string array."""
    encoded = pc.dictionary_encode(keys).combine_chunks() if isinstance(keys, pa.ChunkedArray) \
        else pc.dictionary_encode(keys)
    distinct = encoded.dictionary
    return encoded.indices, distinct, _digest(distinct.to_pylist())


def prompt_tables(messages: Sequence[Sequence[dict[str, str]]]) -> tuple[pa.Array, pa.Table, pa.Table]:
    """The prompt hash of every chat in ``messages`` (in order) and the two tables that store
    the distinct prompts and messages (see the module docstring)."""
    counts = np.fromiter((len(chat) for chat in messages), dtype=np.int64, count=len(messages))
    roles = pa.array([m["role"] for chat in messages for m in chat], pa.string())
    contents = pa.array([m["content"] for chat in messages for m in chat], pa.string())
    if len(roles) == 0:
        return (pa.array([None] * len(messages), pa.string()), prompts_schema().empty_table(),
                prompt_messages_schema().empty_table())
    idx, _, msg_hashes = _hash_distinct(pc.binary_join_element_wise(roles, contents, _SEP))
    idx_np = idx.to_numpy(zero_copy_only=False)
    per_row_hash = pa.array(msg_hashes[idx_np], pa.string())
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    chats = pa.ListArray.from_arrays(offsets, per_row_hash)
    p_idx, p_keys, p_hashes = _hash_distinct(pc.binary_join(chats, _SEP))
    hashes = pa.array(p_hashes[p_idx.to_numpy(zero_copy_only=False)], pa.string())
    # first chat of each distinct prompt, first row of each distinct message
    first_chat = np.unique(p_idx.to_numpy(zero_copy_only=False), return_index=True)[1]
    prompts = pa.Table.from_arrays([pa.array(p_hashes[np.arange(len(p_keys))], pa.string()),
                                    chats.take(pa.array(first_chat))], schema=prompts_schema())
    first_msg = np.unique(idx_np, return_index=True)[1]
    take = pa.array(first_msg)
    prompt_messages = pa.Table.from_arrays([per_row_hash.take(take), roles.take(take), contents.take(take)],
                                           schema=prompt_messages_schema())
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
