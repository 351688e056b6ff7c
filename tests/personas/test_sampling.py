"""Shape, types, determinism and shard invariance of sampled persona tables."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from crowdlab.personas import load_spec, parse_spec, sample, sample_rows, shard_bounds
from crowdlab.personas.sampling.streams import BLOCK_ROWS

MIXED = {
    "name": "mixed",
    "attributes": [
        {"name": "group", "kind": "categorical", "sampling": "quota", "percentages": {"a": 33.3, "b": 33.3, "c": 33.4}},
        {"name": "sex", "kind": "categorical", "weights": {"male": 1, "female": 1}},
        {"name": "age", "kind": "normal", "mean": 40, "std": 12, "low": 18, "high": 90, "integer": True},
        {"name": "score", "kind": "lognormal", "median": 10, "sigma": 0.5},
        {"name": "locale", "kind": "categorical", "values": ["de_DE", "ja_JP", "en_US"]},
        {"name": "name", "kind": "identity", "field": "name", "locale": "locale", "gender": "sex"},
        {"name": "description", "kind": "template", "template": "{name} ({age}) in {group}, {score:.1f}"},
    ],
}


@pytest.fixture(scope="module")
def mixed():
    return parse_spec(MIXED)


def test_columns_and_types(mixed) -> None:
    table = sample(mixed, 500, seed=3)
    assert table.column_names == ["agent_id", "group", "sex", "age", "score", "locale", "name", "description"]
    types = {f.name: f.type for f in table.schema}
    assert types["agent_id"] == pa.int64() and types["age"] == pa.int64() and types["score"] == pa.float64()
    assert types["group"] == pa.string() and types["description"] == pa.string()
    assert table.column("agent_id").to_pylist() == list(range(500))
    assert all(table.column(c).null_count == 0 for c in table.column_names)


def test_same_seed_same_table_other_seed_differs(mixed) -> None:
    assert sample(mixed, 300, seed=11).equals(sample(mixed, 300, seed=11))
    assert not sample(mixed, 300, seed=11).equals(sample(mixed, 300, seed=12))


@pytest.mark.slow
def test_one_shard_equals_seven_shards_across_block_edges(mixed) -> None:
    n = 2 * BLOCK_ROWS + 1234  # shards straddle the random-stream block boundaries
    assert sample(mixed, n, seed=5, shards=1).equals(sample(mixed, n, seed=5, shards=7))


def test_a_slice_alone_equals_the_slice_of_the_full_table(mixed) -> None:
    n = BLOCK_ROWS + 500
    full = sample(mixed, n, seed=9)
    for start, stop in [(0, 1), (17, 4000), (BLOCK_ROWS - 3, BLOCK_ROWS + 20), (n - 5, n)]:
        part = sample_rows(mixed, start, stop, seed=9, n_total=n)
        assert part.equals(full.slice(start, stop - start)), (start, stop)


def test_shard_bounds_cover_range_without_gaps() -> None:
    bounds = shard_bounds(1000, 7)
    assert bounds[0][0] == 0 and bounds[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


def test_quota_counts_are_exact_and_shuffled(mixed) -> None:
    table = sample(mixed, 1000, seed=2)
    counts = Counter(table.column("group").to_pylist())
    assert counts == {"a": 333, "b": 333, "c": 334}
    first_300 = table.column("group").to_pylist()[:300]
    assert len(set(first_300)) == 3  # not laid out in blocks


def test_largest_remainder_rounding_for_paper_education(populations) -> None:
    spec = load_spec(populations / "paper_education.yaml")
    counts = Counter(sample(spec, 1003, seed=1).column("education").to_pylist())
    assert sorted(counts.values()) == [200, 200, 201, 201, 201]


def test_bounds_and_integers_are_respected(mixed) -> None:
    table = sample(mixed, 20_000, seed=4)
    age = table.column("age").to_numpy()
    assert age.min() >= 18 and age.max() <= 90
    assert table.column("score").to_numpy().min() > 0


def test_unicode_values_and_templates() -> None:
    spec = parse_spec(
        "name: ünï\nattributes:\n"
        "  - {name: stadt, kind: categorical, values: [München, 東京, São Paulo]}\n"
        "  - {name: beschreibung, kind: template, template: 'wohnt in {stadt} ✓', maps: {stadt: {東京: 東京都}}}\n"
    )
    table = sample(spec, 300, seed=1)
    assert set(table.column("stadt").to_pylist()) == {"München", "東京", "São Paulo"}
    assert set(table.column("beschreibung").to_pylist()) == {"wohnt in München ✓", "wohnt in 東京都 ✓", "wohnt in São Paulo ✓"}


def test_yaml_12_words_stay_strings() -> None:
    spec = parse_spec("name: t\nattributes:\n  - {name: smoker, kind: categorical, weights: {yes: 1, no: 3}}\n")
    assert set(sample(spec, 200, seed=1).column("smoker").to_pylist()) == {"yes", "no"}


def test_adding_an_attribute_leaves_other_columns_unchanged() -> None:
    base = {"name": "t", "attributes": [{"name": "x", "kind": "uniform", "low": 0, "high": 1}]}
    more = {"name": "t", "attributes": [{"name": "w", "kind": "categorical", "values": ["a", "b"]}] + base["attributes"]}
    a = sample(parse_spec(base), 100, seed=1).column("x")
    b = sample(parse_spec(more), 100, seed=1).column("x")
    assert a.equals(b)


def test_template_formats_numbers(mixed) -> None:
    table = sample(mixed, 50, seed=1)
    for row in table.to_pylist():
        assert row["description"] == f"{row['name']} ({row['age']}) in {row['group']}, {row['score']:.1f}"


def test_conditional_falls_back_to_default() -> None:
    spec = parse_spec(
        {
            "name": "t",
            "attributes": [
                {"name": "edu", "kind": "categorical", "values": ["phd", "none", "school"]},
                {
                    "name": "job",
                    "kind": "conditional",
                    "on": "edu",
                    "cases": {"phd": {"kind": "categorical", "values": ["professor"]}},
                    "default": {"kind": "categorical", "values": ["clerk"]},
                },
            ],
        }
    )
    rows = sample(spec, 600, seed=3).to_pylist()
    assert all((r["job"] == "professor") == (r["edu"] == "phd") for r in rows)
    assert np.mean([r["job"] == "clerk" for r in rows]) > 0.5
