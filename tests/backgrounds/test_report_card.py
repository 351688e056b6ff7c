"""Report card numbers on populations whose answers are known."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from crowdlab.flows.cli import app
from crowdlab.personas import parse_spec, sample, write_personas
from crowdlab.personas.report.card import report_card, write_report_card
from crowdlab.personas.report.text_stats import minhash_permutations, signatures, text_stats, tokenize

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
    from crowdlab.personas.backgrounds.write import add_backgrounds, resolve_backend

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


class _Tags(HTMLParser):
    """Every start tag with its attributes, for structure checks."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]


CONDITIONAL_SPEC = {
    "name": "conditional_card",
    "attributes": [
        {"name": "age", "kind": "uniform", "low": 18, "high": 80, "integer": True},
        {"name": "occupation", "kind": "categorical", "percentages": {"student": 20, "nurse": 30, "professor": 10, "retired": 40}},
        {"name": "income", "kind": "conditional", "on": "occupation",
         "cases": {"student": {"kind": "lognormal", "median": 12000, "sigma": 0.5}},
         "default": {"kind": "lognormal", "median": 45000, "sigma": 0.4}},
        {"name": "field", "kind": "conditional", "on": "occupation",
         "cases": {"professor": {"kind": "categorical", "percentages": {"science": 60, "arts": 40}}},
         "default": {"kind": "categorical", "percentages": {"science": 30, "arts": 20, "trade": 50}}},
        {"name": "height", "kind": "normal", "mean": 170, "std": 9},
    ],
    # unreachable: 40 % retired, all 70 or older, but only 11 of 63 ages are
    "constraints": [{"name": "retired_over_70", "if": {"occupation": {"in": ["retired"]}}, "then": {"age": {"ge": 70}}}],
}


def test_card_has_every_section_a_figure_per_numeric_attribute_and_examples(demo_spec, tmp_path: Path) -> None:
    from crowdlab.personas.backgrounds.write import add_backgrounds, resolve_backend

    table = add_backgrounds(sample(demo_spec, 800, 3), demo_spec, 3, resolve_backend(demo_spec, {"kind": "echo", "corrupt_rate": 0.3}))
    card = write_report_card(table, tmp_path, demo_spec, example_seed=7)
    page = _Tags((tmp_path / "report_card.html").read_text())
    sections = {a["id"] for a in page.find("section") if a.get("id")}
    assert {"fit", "constraints", "attributes", "coverage", "names", "backgrounds", "examples"} <= sections
    numeric = [a.name for a in demo_spec.attributes if a.kind in ("uniform", "normal", "lognormal")]
    assert numeric == ["age", "income_eur"]
    for name in numeric:  # exactly one histogram per numeric attribute, inside its own section
        assert len(page.find("img", data_figure="histogram", data_attribute=name)) == 1
        h = card["distributions"][name]["histogram"]
        assert len(h["realised"]) == len(h["target"]) == len(h["edges"]) - 1
        assert abs(sum(h["realised"]) + h["outside"]["realised_below"] + h["outside"]["realised_above"] - 1) < 1e-9
    assert len(page.find("img", data_figure="histogram")) == len(numeric)
    assert len(page.find("img", data_figure="bars")) == 4  # locale, sex, education, occupation
    # examples: a seeded sample with gate verdicts, plus personas the gate flagged
    examples = page.find("div", **{"class": "example"})
    random_rows = [e for e in examples if e["data-chosen"] == "random"]
    assert len(random_rows) == 5 and len(examples) == 7
    assert page.find("span", data_verdict="flagged") and all("gate" in e and "background" in e for e in card["examples"])
    again = write_report_card(table, tmp_path / "again", demo_spec, example_seed=7)
    assert [e["row"] for e in again["examples"]] == [e["row"] for e in card["examples"]]
    # the demo's constraints leave every target reachable: no flag, and the card says so
    assert not page.find("div", **{"class": "flag"}) and "Every target marginal is attainable" in (tmp_path / "report_card.html").read_text()


def test_conditional_attributes_get_small_multiples_and_departures_are_flagged(tmp_path: Path) -> None:
    spec = parse_spec(CONDITIONAL_SPEC)
    table = sample(spec, 6000, seed=1)
    card = write_report_card(table, tmp_path, spec)
    page = _Tags((tmp_path / "report_card.html").read_text())
    for name in ("income", "field"):
        assert len(page.find("img", data_figure="small-multiples", data_attribute=name)) == 1
        panels = card["distributions"][name]["panels"]
        assert sorted(p["value"] for p in panels) == ["nurse", "professor", "retired", "student"]
        assert sum(p["n"] for p in panels) == 6000
    student = next(p for p in card["distributions"]["income"]["panels"] if p["value"] == "student")
    assert student["case"] and "histogram" in student
    professor = next(p for p in card["distributions"]["field"]["panels"] if p["value"] == "professor")
    assert professor["categories"] == ["science", "arts"] and professor["target"] == pytest.approx([0.6, 0.4])
    assert [a["data-attribute"] for a in page.find("img", data_figure="histogram")] == ["age", "height"]
    flagged = [a for a in card["attributes"] if a["flag"]]
    assert flagged and all(a["departure"] for a in flagged)
    for a in flagged:
        assert page.find("div", data_flag=a["name"])
        assert {"label", "target", "attainable", "realised"} <= set(a["departure"][0])
    assert not page.find("section", id="backgrounds")
    assert len(page.find("div", **{"class": "example"})) == 5 and "gate" not in card["examples"][0]
