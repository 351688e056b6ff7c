"""Text statistics for the report card, vectorised for a million backgrounds.

Texts are normalised (lower case, punctuation -> space) and split into words column-wise with
pyarrow, chunk by chunk; each chunk's distinct words are hashed once (blake2b, a few tens of
thousands per chunk) and gathered, so every word, n-gram and text hash is content-based and
equal across chunks. From those: distinct-n, word counts, exact duplicates (same normalised
text) and MinHash signatures over word 3-shingles.

MinHash uses datasketch's permutations (``MinHash(num_perm, seed).permutations``) and its
arithmetic, applied with numpy to a chunk of shingles at once (datasketch's per-object
``update`` is Python per shingle: hours at this size); the LSH band layout comes from
datasketch's ``MinHashLSH`` for the chosen threshold (weighted towards recall), and candidate pairs are verified by the
estimated Jaccard similarity of their signatures. A test checks our signatures equal datasketch's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.hashing import splitmix64

MERSENNE = np.uint64((1 << 61) - 1)
MAX_HASH = np.uint64((1 << 32) - 1)
_C2 = np.uint64(0x9E3779B97F4A7C15)
_C3 = np.uint64(0xC2B2AE3D27D4EB4F)


def minhash_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from datasketch import MinHash

    try:  # datasketch >= 2.0 has several schemes; ours is the classic (a*h + b) mod (2**61 - 1)
        sketch = MinHash(num_perm=num_perm, seed=seed, scheme="legacy")
    except TypeError:  # datasketch < 2.0: legacy is the only scheme
        sketch = MinHash(num_perm=num_perm, seed=seed)
    a, b = sketch.permutations
    return a.astype(np.uint64), b.astype(np.uint64)


def word_hashes(words: list[str]) -> np.ndarray:
    """32-bit content hash of each distinct word (little-endian blake2b, as a uint64)."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=4).digest(), "little") for w in words),
                       dtype=np.uint64, count=len(words))


@dataclass
class ChunkTokens:
    lengths: np.ndarray  # words per text
    h1: np.ndarray  # word hashes, flat
    g2: np.ndarray  # 2-gram hashes that stay inside one text
    g3: np.ndarray  # 3-gram hashes that stay inside one text
    g3_text: np.ndarray  # which text (chunk-local) each 3-gram belongs to
    text_hash: np.ndarray  # one hash per text (order-sensitive over its words)


def tokenize(texts: pa.Array) -> ChunkTokens:
    norm = pc.utf8_lower(pc.fill_null(texts, ""))
    norm = pc.utf8_trim_whitespace(pc.replace_substring_regex(norm, r"[^\w]+", " "))
    words = pc.split_pattern(norm, " ")
    lengths = pc.list_value_length(words).to_numpy().astype(np.int64)
    empty = np.asarray(pc.equal(pc.utf8_length(norm), 0).to_numpy(zero_copy_only=False), dtype=bool)
    flat = pc.list_flatten(words)
    keep = np.repeat(~empty, lengths)  # an empty text splits into one "" word: drop it
    lengths[empty] = 0
    flat = flat.filter(pa.array(keep)) if (~keep).any() else flat
    encoded = pc.dictionary_encode(flat)
    h1 = word_hashes(encoded.dictionary.to_pylist())[encoded.indices.to_numpy()] if len(flat) else np.zeros(0, np.uint64)
    text_of = np.repeat(np.arange(len(lengths)), lengths)
    with np.errstate(over="ignore"):
        g2 = splitmix64(h1[:-1] ^ (h1[1:] * _C2)) if len(h1) > 1 else np.zeros(0, np.uint64)
        g3 = splitmix64(g2[:-1] ^ (h1[2:] * _C3)) if len(h1) > 2 else np.zeros(0, np.uint64)
        pos_mix = splitmix64(h1 ^ (np.arange(len(h1), dtype=np.uint64) - np.repeat(np.cumsum(lengths) - lengths, lengths).astype(np.uint64)))
    same2 = text_of[:-1] == text_of[1:] if len(h1) > 1 else np.zeros(0, bool)
    same3 = (text_of[:-2] == text_of[2:]) if len(h1) > 2 else np.zeros(0, bool)
    starts = np.cumsum(lengths) - lengths
    sums = np.zeros(len(lengths), np.uint64)
    nonempty = lengths > 0
    if nonempty.any():
        with np.errstate(over="ignore"):
            sums[nonempty] = np.add.reduceat(pos_mix, starts[nonempty])
    text_hash = splitmix64(sums ^ lengths.astype(np.uint64))
    return ChunkTokens(lengths, h1, g2[same2], g3[same3], text_of[:-2][same3] if len(h1) > 2 else np.zeros(0, np.int64), text_hash)


def signatures(shingles: np.ndarray, text_of: np.ndarray, n_texts: int, a: np.ndarray, b: np.ndarray,
               step: int = 200_000) -> np.ndarray:
    """MinHash signature (num_perm uint32 values) per text; texts with no shingle get all MAX_HASH."""
    sig = np.full((n_texts, len(a)), np.uint32(MAX_HASH), dtype=np.uint32)
    hv = shingles & MAX_HASH
    for lo in range(0, len(hv), step):
        part = hv[lo:lo + step]
        owner = text_of[lo:lo + step]
        with np.errstate(over="ignore"):
            phv = ((part[None, :] * a[:, None] + b[:, None]) % MERSENNE) & MAX_HASH
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        mins = np.minimum.reduceat(phv, starts, axis=1).T.astype(np.uint32)
        rows = owner[starts]
        sig[rows] = np.minimum(sig[rows], mins)  # a text split across two steps keeps the smaller
    return sig


def near_duplicates(sig: np.ndarray, has_shingles: np.ndarray, threshold: float, bands: int, rows: int) -> np.ndarray:
    """Mask of texts with another text of estimated Jaccard >= threshold (LSH bands, verified)."""
    n = sig.shape[0]
    near = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(has_shingles)
    if idx.size < 2:
        return near
    s = sig[idx]  # stays uint32: a million 64-wide signatures are 256 MB, not 512
    for band in range(bands):
        key = np.zeros(len(idx), np.uint64)
        for col in range(band * rows, (band + 1) * rows):
            key = splitmix64(key ^ s[:, col].astype(np.uint64))
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        first = np.r_[True, sorted_key[1:] != sorted_key[:-1]]
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
        rep = order[group_start]
        member = order
        cand = member != rep
        if not cand.any():
            continue
        m, r = member[cand], rep[cand]
        similar = (s[m] == s[r]).mean(axis=1) >= threshold
        near[idx[m[similar]]] = True
        near[idx[r[similar]]] = True
    return near


@dataclass
class TextStats:
    n: int
    empty: int
    exact_duplicate_rate: float
    near_duplicate_rate: float
    distinct: dict[str, float]
    words: dict[str, float]
    histogram: tuple[list[float], list[int]]
    lsh: dict[str, float]
    stages_s: dict[str, float] = field(default_factory=dict)


def text_stats(texts: pa.ChunkedArray | pa.Array, *, threshold: float = 0.8, num_perm: int = 64, seed: int = 1,
               chunk: int = 50_000) -> TextStats:
    """Duplicate rates, distinct-n and lengths of a column of texts (see module docstring)."""
    import time

    from datasketch import MinHashLSH

    stages: dict[str, float] = {}
    texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    n = len(texts)
    a, b = minhash_permutations(num_perm, seed)
    lengths, text_hash = [], []
    uniq: dict[int, list[np.ndarray]] = {1: [], 2: [], 3: []}
    totals = {1: 0, 2: 0, 3: 0}
    sig = np.empty((n, num_perm), np.uint32)
    t_tok = t_sig = 0.0
    for lo in range(0, n, chunk):
        t0 = time.perf_counter()
        tok = tokenize(texts.slice(lo, chunk))
        lengths.append(tok.lengths)
        text_hash.append(tok.text_hash)
        for k, arr in ((1, tok.h1), (2, tok.g2), (3, tok.g3)):
            uniq[k].append(np.unique(arr))
            totals[k] += len(arr)
        t1 = time.perf_counter()
        sig[lo:lo + len(tok.lengths)] = signatures(tok.g3, tok.g3_text, len(tok.lengths), a, b)
        t_sig += time.perf_counter() - t1
        t_tok += t1 - t0
    stages["tokenize_and_hash_s"] = t_tok
    stages["minhash_s"] = t_sig
    t0 = time.perf_counter()
    words = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    hashes = np.concatenate(text_hash) if text_hash else np.zeros(0, np.uint64)
    distinct = {}
    for k in (1, 2, 3):  # one n at a time, dropping each chunk list once merged (peak memory)
        merged = np.concatenate(uniq.pop(k)) if totals[k] else np.zeros(0, np.uint64)
        merged.sort()
        distinct[f"distinct_{k}"] = int(np.count_nonzero(np.r_[True, merged[1:] != merged[:-1]])) / totals[k] if totals[k] else 0.0
        del merged
    stages["distinct_n_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    nonempty = words > 0
    _, first_idx = np.unique(hashes[nonempty], return_index=True)
    exact_dup = (nonempty.sum() - len(first_idx)) / n if n else 0.0
    rep_rows = np.flatnonzero(nonempty)[first_idx]
    # candidates are verified on their signatures, so false positives cost little: favour recall
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
    near_rep = near_duplicates(sig[rep_rows], words[rep_rows] >= 3, threshold, lsh.b, lsh.r)
    # a row is a near duplicate when its text (deduplicated) has a near-duplicate partner
    _, inverse = np.unique(hashes, return_inverse=True)
    near_by_hash = np.zeros(inverse.max() + 1 if n else 0, dtype=bool)
    near_by_hash[inverse[rep_rows]] = near_rep
    near_rows = near_by_hash[inverse] & nonempty
    stages["lsh_s"] = time.perf_counter() - t0
    counts, edges = np.histogram(words, bins=min(40, max(1, int(words.max(initial=0)) + 1)))
    quant = {f"q{int(q * 100):02d}": float(np.quantile(words, q)) if n else 0.0 for q in (0.05, 0.5, 0.95)}
    return TextStats(
        n=n, empty=int((~nonempty).sum()), exact_duplicate_rate=float(exact_dup), near_duplicate_rate=float(near_rows.mean()) if n else 0.0,
        distinct=distinct, words={"mean": float(words.mean()) if n else 0.0, "min": float(words.min(initial=0)), "max": float(words.max(initial=0)), **quant},
        histogram=(edges.tolist(), counts.tolist()), lsh={"threshold": threshold, "num_perm": num_perm, "bands": lsh.b, "rows": lsh.r},
        stages_s=stages,
    )
