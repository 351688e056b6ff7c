"""Report card numbers on populations whose answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from crowdlab.flows.cli import app
from crowdlab.personas import parse_spec, sample, write_personas
from crowdlab.personas.report_card import report_card, write_report_card
from crowdlab.personas.text_stats import minhash_permutations, signatures, text_stats, tokenize

QUOTA_SPEC = parse_spec({
    "name": "exact",
    "attributes": [
        {"name": "a", "kind": "categorical", "sampling": "quota", "percentages": {"x": 50, "y": 30, "z": 20}},
        {"name": "b", "kind": "categorical", "sampling": "quota", "values": ["p", "q"]},
        {"name": "name", "kind": "identity", "field": "name", "locale": "en_US"},
    ],
})


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"word{i}" for i in range(20_000)])
    return [" ".join(rng.choice(vocab, 60)) for _ in range(n)]


def test_planted_exact_and_near_duplicates_are_found() -> None:
    texts = corpus(3000)
    for k in range(30):  # 30 exact copies (case and punctuation do not matter)
        texts[100 + k] = texts[k].upper() + "!"
    for k in range(20):  # 20 near copies: one word of 60 changed (3-shingle Jaccard ~0.9)
        words = texts[1000 + k].split()
        words[30] = "changed"
        texts[2000 + k] = " ".join(words)
    texts[2999] = ""
    stats = text_stats(pa.array(texts))
    assert stats.exact_duplicate_rate == pytest.approx(30 / 3000)
    assert stats.near_duplicate_rate == pytest.approx(40 / 3000)  # both texts of each pair
    assert stats.empty == 1 and stats.words["q50"] == 60
    assert stats.distinct["distinct_3"] > 0.97


def test_distinct_n_on_a_known_corpus() -> None:
    stats = text_stats(pa.array(["a b a b", "a b a b"]))
    assert stats.distinct["distinct_1"] == pytest.approx(2 / 8)
    assert stats.distinct["distinct_2"] == pytest.approx(2 / 6)  # "a b", "b a"
    assert stats.exact_duplicate_rate == 0.5


def test_signatures_equal_datasketch() -> None:
    from datasketch import MinHash

    texts = corpus(3, seed=1)
    tok = tokenize(pa.array(texts))
    a, b = minhash_permutations(64, 1)
    sig = signatures(tok.g3, tok.g3_text, 3, a, b, step=50)  # texts split across steps
    for i in range(3):
        try:
            m = MinHash(num_perm=64, seed=1, hashfunc=lambda x: x, scheme="legacy")
        except TypeError:
            m = MinHash(num_perm=64, seed=1, hashfunc=lambda x: x)
        m.update_batch([int(x) for x in tok.g3[tok.g3_text == i] & np.uint64(0xFFFFFFFF)])
        assert (m.hashvalues == sig[i]).all()


def test_a_spec_matched_exactly_has_zero_tvd_and_full_coverage() -> None:
    table = sample(QUOTA_SPEC, 1000, seed=1)
    card = report_card(table, QUOTA_SPEC)
    assert card["max_tvd"] == pytest.approx(0.0, abs=1e-12)
    (pair,) = card["coverage"]
    assert pair["cells"] == 6 and pair["occupied"] == 6 and pair["expected_occupied"] == pytest.approx(6.0)
    assert 0.9 < card["names"]["name"] <= 1.0
    assert "backgrounds" not in card


def test_report_files_and_cli(demo_spec, tmp_path: Path) -> None:
    from crowdlab.personas.backgrounds import add_backgrounds, resolve_backend

    table = add_backgrounds(sample(demo_spec, 500, 2), demo_spec, 2, resolve_backend(demo_spec, {"kind": "echo", "corrupt_rate": 0.2}))
    write_personas(table, tmp_path / "personas.parquet", spec=demo_spec, seed=2)
    result = CliRunner().invoke(app, ["personas", "report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "report_card.json").read_text())
    assert card["n"] == 500 and card["backgrounds"]["contradiction_rate"]["before_regeneration"] > 0.1
    assert "<img" in (tmp_path / "report_card.html").read_text()
    assert set(card["stages_s"]) >= {"fit_s", "coverage_s", "backgrounds_minhash_s", "backgrounds_lsh_s", "plots_s"}
    missing = CliRunner().invoke(app, ["personas", "report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
