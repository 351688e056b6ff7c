import numpy as np
import pandas as pd
import pytest
from scipy import stats

from crowdlab.analysis import (
    breakdown,
    compare_conditions,
    level_k_points,
    level_k_shares,
    load,
    replicate_ci,
    round_metrics,
)


def test_level_k_points_offset_variant_iterates_the_map():
    pts = level_k_points(0.5, offset=5.0).set_index("label")["point"]
    assert pts["L1@50"] == 30.0 and pts["L2@50"] == 20.0 and pts["L3@50"] == 15.0
    assert pts["L1@100"] == 55.0 and pts["L2@100"] == 32.5
    assert pts["EQ"] == 10.0


def test_level_k_points_p_above_one_clip_at_top():
    pts = level_k_points(4 / 3).set_index("label")["point"]
    assert pts["L1@50"] == pytest.approx(200 / 3)
    assert pts["L1@100"] == 100.0 and pts["EQ"] == 100.0


def test_level_k_shares_by_hand(small_run):
    shares = level_k_shares(small_run, tol=1.0).set_index(["condition_id", "round", "label"])
    # c000 round 2: valid 22, 22, 10, 0, 14 -> two near 22.2 (L2@50), 14 near 14.8, 0 at EQ
    assert shares.loc[("c000", 2, "L2@50"), "share"] == pytest.approx(2 / 5)
    assert shares.loc[("c000", 2, "L3@50"), "share"] == pytest.approx(1 / 5)
    assert shares.loc[("c000", 2, "EQ"), "share"] == pytest.approx(1 / 5)
    assert shares.loc[("c000", 2, "L1@50"), "n_near"] == 0
    # c001 round 2: 20 x3 sit at L2@50 = 20 and 10 x3 at the equilibrium 10
    assert shares.loc[("c001", 2, "L2@50"), "share"] == pytest.approx(0.5)
    assert shares.loc[("c001", 2, "EQ"), "share"] == pytest.approx(0.5)


def test_breakdown_by_persona_attribute(small_run):
    b = breakdown(small_run, "education").set_index(["condition_id", "round", "education"])
    # c000 round 1: phd agents 0, 1 guessed 50, 30; bachelor agents 4 (40) and 5 (unparseable)
    assert b.loc[("c000", 1, "phd"), "mean"] == 40.0
    assert b.loc[("c000", 1, "bachelor"), "n_valid"] == 1
    assert b.loc[("c000", 1, "bachelor"), "invalid_rate"] == 0.5


def test_breakdown_by_decision_column_and_unknown(small_run):
    assert breakdown(small_run, "model")["model"].unique().tolist() == ["behavioral"]
    with pytest.raises(KeyError, match="shoe_size"):
        breakdown(small_run, "shoe_size")


def test_compare_conditions_matches_scipy_and_effect_sizes(small_run):
    res = compare_conditions(small_run, "c000", "c001", rounds=[1]).iloc[0]
    a, b = np.array([50, 30, 20, 20, 40.0]), np.array([10, 30, 27.5, 12.5, 50, 25])
    assert res["welch_p"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    u = stats.mannwhitneyu(a, b).statistic
    assert res["mannwhitney_u"] == u
    assert res["rank_biserial"] == pytest.approx(2 * u / 30 - 1)
    pooled = np.sqrt((4 * a.var(ddof=1) + 5 * b.var(ddof=1)) / 9)
    assert res["cohen_d"] == pytest.approx((a.mean() - b.mean()) / pooled)


def test_compare_all_pairs_and_bad_names(small_run):
    assert len(compare_conditions(small_run)) == 2  # one pair x two rounds
    with pytest.raises(KeyError, match="c999"):
        compare_conditions(small_run, "c000", "c999")
    with pytest.raises(ValueError, match="both"):
        compare_conditions(small_run, "c000")


def test_compare_clearly_different_populations_is_significant(make_run):
    rng = np.random.default_rng(3)
    low, high = rng.normal(20, 5, 300).clip(0, 100), rng.normal(40, 5, 300).clip(0, 100)
    run_dir = make_run(guesses={("c000", 0, 1): list(low), ("c001", 0, 1): list(high)},
                       conditions={"c000": {"p": 0.5}, "c001": {"p": 2 / 3}})
    res = compare_conditions(run_dir).iloc[0]
    assert res["mannwhitney_p"] < 1e-6 and res["rank_biserial"] < -0.9 and res["cohen_d"] < -3


def test_replicate_ci_bootstrap_seeded(make_run):
    guesses = {("c000", rep, 1): [10 + rep * 2, 20 + rep * 2, 30 + rep * 2] for rep in range(5)}
    m = round_metrics(make_run(guesses=guesses, conditions={"c000": {"p": 0.5}}))
    ci = replicate_ci(m, seed=1)
    first = ci.iloc[0]
    assert first["n_replicates"] == 5 and first["estimate"] == pytest.approx(24.0)  # means 20..28
    assert 20 <= first["ci_low"] < 24 < first["ci_high"] <= 28
    again = replicate_ci(m, seed=1).iloc[0]
    assert (again["ci_low"], again["ci_high"]) == (first["ci_low"], first["ci_high"])


def test_replicate_ci_single_replicate_is_nan(small_run):
    ci = replicate_ci(round_metrics(small_run))
    assert ci["ci_low"].isna().all() and (ci["n_replicates"] == 1).all()
    with pytest.raises(KeyError):
        replicate_ci(round_metrics(small_run), metric="nope")


def test_replicate_ci_unit_compare(make_run):
    guesses = {(c, rep, 1): [v + rep for v in base] for c, base in (("c000", [10, 20]), ("c001", [50, 60]))
               for rep in range(4)}
    run_dir = make_run(guesses=guesses, conditions={"c000": {"p": 0.5}, "c001": {"p": 0.5}})
    res = compare_conditions(run_dir, unit="replicate").iloc[0]
    assert (res["n_a"], res["n_b"]) == (4, 4) and res["diff"] == pytest.approx(-40)


def test_adjust_pvalues_holm_by_hand_and_bh_from_scipy():
    from crowdlab.analysis.stats import adjust_pvalues

    p = np.array([0.01, 0.04, 0.03, np.nan, 0.5])
    # Holm over the four finite p: sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1, then running max
    assert adjust_pvalues(p, "holm")[[0, 1, 2, 4]] == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert np.isnan(adjust_pvalues(p)[3])
    assert adjust_pvalues([0.9, 0.8], "holm").max() <= 1.0
    finite = p[np.isfinite(p)]
    assert adjust_pvalues(finite, "bh") == pytest.approx(stats.false_discovery_control(finite))
    with pytest.raises(ValueError, match="holm"):
        adjust_pvalues(p, "bonferonni")


def test_single_factor_pairs_of_a_4x3_design():
    from crowdlab.analysis.stats import single_factor_pairs

    cond = pd.DataFrame([{"condition_id": f"c{i:03d}", "variant": v, "p": p}
                         for i, (v, p) in enumerate((v, p) for v in "ABCD" for p in ("0.5", "0.6667", "1.3333"))])
    pairs = single_factor_pairs(cond, ["variant", "p"])
    assert len(pairs) == 4 * 3 + 3 * 6  # p pairs within each variant + variant pairs within each p
    assert ("c000", "c001") in pairs and ("c000", "c004") not in pairs  # c004 differs in both
    assert len(single_factor_pairs(cond, ["variant"])) == 66  # one factor: every pair


def test_compare_conditions_adjusts_over_the_whole_table(small_run):
    from crowdlab.analysis.stats import adjust_pvalues

    res = compare_conditions(small_run)
    assert res["mannwhitney_p_adj"].tolist() == pytest.approx(adjust_pvalues(res["mannwhitney_p"]).tolist())
    assert (res["welch_p_adj"] >= res["welch_p"]).all()
    none = compare_conditions(small_run, correction="none")
    assert none["welch_p_adj"].tolist() == pytest.approx(none["welch_p"].tolist())
    picked = compare_conditions(small_run, pairs=[("c001", "c000")])
    assert picked[["condition_a", "condition_b"]].drop_duplicates().values.tolist() == [["c001", "c000"]]
