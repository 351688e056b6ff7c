"""Realised marginals and conditionals match the spec (fixed seeds, so never flaky).

Each test draws enough rows that a real mismatch (a share off by a point, a wrong truncation)
would be rejected, and uses a p-value threshold of 0.001 for the chi-square / KS tests.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from crowdlab.personas import load_spec, parse_spec, sample

ALPHA = 1e-3


def chi_square_p(observed: list[str], categories: list[str], shares: np.ndarray) -> float:
    counts = np.array([observed.count(c) for c in categories], dtype=float)
    return stats.chisquare(counts, shares / shares.sum() * counts.sum()).pvalue


def test_categorical_marginals_match_weights() -> None:
    spec = parse_spec({"name": "t", "attributes": [{"name": "c", "kind": "categorical", "weights": {"a": 5, "b": 3, "c": 2, "d": 0}}]})
    values = sample(spec, 50_000, seed=21).column("c").to_pylist()
    assert "d" not in values
    assert chi_square_p(values, ["a", "b", "c"], np.array([5, 3, 2.0])) > ALPHA


def test_chi_square_detects_a_wrong_target() -> None:
    """The check above can fail: the same sample is rejected against slightly different shares."""
    spec = parse_spec({"name": "t", "attributes": [{"name": "c", "kind": "categorical", "weights": {"a": 5, "b": 3, "c": 2}}]})
    values = sample(spec, 50_000, seed=21).column("c").to_pylist()
    assert chi_square_p(values, ["a", "b", "c"], np.array([0.52, 0.29, 0.19])) < ALPHA


@pytest.mark.slow
def test_general_adult_marginals_and_conditionals(populations) -> None:
    spec = load_spec(populations / "general_adult.yaml")
    table = sample(spec, 200_000, seed=7).to_pandas()
    sex = spec.attribute("sex")
    assert chi_square_p(table["sex"].tolist(), sex.categories, sex.probabilities) > ALPHA
    groups = spec.attribute("age_group")
    assert chi_square_p(table["age_group"].tolist(), groups.categories, groups.probabilities) > ALPHA
    education = spec.attribute("education")
    for group, rows in table.groupby("age_group"):
        dist = education.cases.get(group, education.default)
        keep = dist.probabilities > 0
        cats = [c for c, k in zip(dist.categories, keep) if k]
        assert set(rows["education"]) <= set(cats), group
        assert chi_square_p(rows["education"].tolist(), cats, dist.probabilities[keep]) > ALPHA, group
    ages = spec.attribute("age")
    for group, rows in table.groupby("age_group"):
        case = ages.cases[group]
        assert rows["age"].between(case.low, case.high).all()
        support = np.arange(int(case.low), int(case.high) + 1)
        counts = rows["age"].value_counts().reindex(support, fill_value=0).to_numpy()
        assert stats.chisquare(counts).pvalue > ALPHA, group  # uniform over integers


@pytest.mark.slow
def test_lognormal_earnings_given_education(populations) -> None:
    spec = load_spec(populations / "general_adult.yaml")
    table = sample(spec, 100_000, seed=8).to_pandas()
    earnings = spec.attribute("annual_earnings_usd")
    for education, rows in table.groupby("education"):
        dist = earnings.cases[education]
        mu, sigma = np.log(dist.median), dist.sigma
        a, b = (np.log(dist.low) - mu) / sigma, (np.log(dist.high) - mu) / sigma
        log_values = np.log(rows["annual_earnings_usd"].to_numpy())
        # integer rounding is negligible on the log scale at these magnitudes
        assert stats.kstest(log_values, stats.truncnorm(a, b, loc=mu, scale=sigma).cdf).pvalue > ALPHA, education


def test_truncated_normal_matches_scipy() -> None:
    spec = parse_spec({"name": "t", "attributes": [{"name": "x", "kind": "normal", "mean": 10, "std": 4, "low": 12, "high": 30}]})
    x = sample(spec, 40_000, seed=31).column("x").to_numpy()
    assert x.min() >= 12 and x.max() <= 30
    dist = stats.truncnorm((12 - 10) / 4, (30 - 10) / 4, loc=10, scale=4)
    assert stats.kstest(x, dist.cdf).pvalue > ALPHA
    assert stats.kstest(x, stats.norm(10, 4).cdf).pvalue < ALPHA  # truncation is not ignored


def test_far_upper_tail_truncation_is_accurate() -> None:
    spec = parse_spec({"name": "t", "attributes": [{"name": "x", "kind": "normal", "mean": 0, "std": 1, "low": 6, "high": 7}]})
    x = sample(spec, 20_000, seed=32).column("x").to_numpy()
    assert stats.kstest(x, stats.truncnorm(6, 7).cdf).pvalue > ALPHA


def test_uniform_float_and_integer() -> None:
    spec = parse_spec(
        {
            "name": "t",
            "attributes": [
                {"name": "f", "kind": "uniform", "low": -2, "high": 3},
                {"name": "i", "kind": "uniform", "low": 1, "high": 6, "integer": True},
            ],
        }
    )
    table = sample(spec, 30_000, seed=33)
    assert stats.kstest(table.column("f").to_numpy(), stats.uniform(-2, 5).cdf).pvalue > ALPHA
    counts = np.bincount(table.column("i").to_numpy(), minlength=7)[1:]
    assert stats.chisquare(counts).pvalue > ALPHA


def test_conditional_categorical_tables() -> None:
    spec = parse_spec(
        {
            "name": "t",
            "attributes": [
                {"name": "edu", "kind": "categorical", "weights": {"low": 1, "high": 1}},
                {
                    "name": "job",
                    "kind": "conditional",
                    "on": "edu",
                    "cases": {
                        "low": {"kind": "categorical", "weights": {"manual": 7, "office": 3}},
                        "high": {"kind": "categorical", "weights": {"manual": 1, "office": 4, "research": 5}},
                    },
                },
            ],
        }
    )
    table = sample(spec, 40_000, seed=34).to_pandas()
    low = table[table.edu == "low"]["job"].tolist()
    high = table[table.edu == "high"]["job"].tolist()
    assert "research" not in low
    assert chi_square_p(low, ["manual", "office"], np.array([7, 3.0])) > ALPHA
    assert chi_square_p(high, ["manual", "office", "research"], np.array([1, 4, 5.0])) > ALPHA
    # the two groups really differ: job depends on edu
    assert stats.chi2_contingency([[low.count("manual"), low.count("office")], [high.count("manual"), high.count("office")]]).pvalue < ALPHA


def test_independent_attributes_are_independent() -> None:
    spec = parse_spec(
        {
            "name": "t",
            "attributes": [
                {"name": "a", "kind": "categorical", "values": ["x", "y", "z"]},
                {"name": "b", "kind": "categorical", "sampling": "quota", "values": ["p", "q"]},
            ],
        }
    )
    table = sample(spec, 30_000, seed=35).to_pandas()
    import pandas as pd

    assert stats.chi2_contingency(pd.crosstab(table.a, table.b)).pvalue > ALPHA
