"""Benchmark: the report card of N personas (default 1,000,000) with ~60-word backgrounds.

Texts are synthesised from word lists (sentence templates filled with the persona's facts and
random everyday words), with 1% planted exact duplicates and 1% near duplicates (one word
changed), so the card has something to find. Prints each stage's time and peak RSS
(target: 1M in under 15 minutes and 4 GiB). Run: .venv/bin/python bench/report_card.py [N]
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.personas import load_spec, sample
from crowdlab.personas.report.card import report_card

SPEC = Path(__file__).resolve().parents[1] / "data" / "populations" / "backgrounds_demo.yaml"
FILLER = ("enjoys", "weekend", "hiking", "cooking", "reading", "garden", "family", "friends", "music", "travel",
          "coffee", "morning", "walks", "dog", "cat", "volunteers", "local", "club", "football", "chess",
          "painting", "history", "novels", "market", "bicycle", "river", "mountains", "sea", "village", "neighbours")


def synth_texts(table: pa.Table, rng: np.random.Generator, chunk: int = 100_000) -> pa.Array:
    """Texts built chunk by chunk in Arrow (the bench's own setup must not dominate peak memory)."""
    n = table.num_rows
    vocab = pa.array([f"{w}{i}" if i else w for i in range(40) for w in FILLER])
    parts_out = []
    for lo in range(0, n, chunk):
        rows = table.slice(lo, chunk)
        m = rows.num_rows
        words = vocab.take(pa.array(rng.integers(0, len(vocab), size=m * 44)))
        tails = pc.binary_join(pa.ListArray.from_arrays(pa.array(np.arange(0, m * 44 + 1, 44, dtype=np.int32)), words), " ")
        parts = ["", rows["name"], " is ", pc.cast(rows["age"], pa.string()), " years old, works as a ", rows["occupation"],
                 " and has a ", rows["education"], ". Lives in ", rows["city"], " and ", tails, "."]
        args = [pa.scalar(p) if isinstance(p, str) else p for p in parts]
        parts_out.append(pc.binary_join_element_wise(*args, pa.scalar("")))
    texts = pa.concat_arrays([c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in parts_out])
    k = n // 100
    src = rng.choice(n, size=2 * k, replace=False)
    near = []
    for i in src[k:].tolist():  # planted near duplicates: one word changed
        words_i = texts[i].as_py().split()
        words_i[20] = "different"
        near.append(" ".join(words_i))
    index = np.arange(n + k)
    index[np.where(src[:k] > 0, src[:k] - 1, 1)] = src[:k]  # planted exact duplicates
    index[(src[k:] + 7) % n] = n + np.arange(k)
    return pa.concat_arrays([texts, pa.array(near, pa.string())]).take(pa.array(index[:n]))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    spec = load_spec(SPEC).model_copy(update={"background": None})
    t0 = time.perf_counter()
    table = sample(spec, n, seed=1)
    texts = synth_texts(table, np.random.default_rng(1))
    table = table.append_column("background", texts)
    print(f"setup (sample + synthesise {n:,} texts): {time.perf_counter() - t0:.1f} s; "
          f"mean words {np.mean(pc.list_value_length(pc.split_pattern(texts, ' ')).to_numpy()):.1f}")
    t0 = time.perf_counter()
    card = report_card(table, spec)
    total = time.perf_counter() - t0
    for stage, seconds in card["stages_s"].items():
        print(f"  {stage:34s} {seconds:8.2f} s")
    b = card["backgrounds"]
    print(f"report card total: {total:.1f} s; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    print(f"exact duplicates {b['exact_duplicate_rate']:.4%} (planted ~1%), near duplicates {b['near_duplicate_rate']:.4%} "
          f"(planted ~2% of rows in pairs), distinct-1/2/3 {b['distinct']}")


if __name__ == "__main__":
    main()
