"""Analysis on a run folder the engine wrote (crowdlab.experiments.run, behavioural backend)."""

import numpy as np
import pytest

from crowdlab.analysis import fidelity, level_k_shares, load, round_metrics, write_report


@pytest.mark.slow
def test_metrics_agree_with_the_engines_settled_rounds(engine_run):
    run = load(engine_run)
    metrics = round_metrics(run).set_index(["condition_id", "replicate", "round"]).sort_index()
    rounds = run.rounds[run.rounds["group"] == -1].set_index(["condition_id", "replicate", "round"]).sort_index()
    assert len(metrics) == len(rounds) == 4 * 2 * 3
    for col in ("n", "n_valid", "n_invalid", "mean", "median", "std", "target", "winning_value", "n_winners"):
        np.testing.assert_allclose(metrics[col].to_numpy(float), rounds[col].to_numpy(float), err_msg=col)


@pytest.mark.slow
def test_engine_run_reports_and_matches_nagel_games(engine_run, tmp_path):
    run = load(engine_run)
    fid = fidelity(run)
    assert set(fid["p"].round(4)) == {0.5, 0.6667}
    assert (level_k_shares(run)["n_valid"] == 200).all()
    page = write_report(run, tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5 and "Breakdown by education" in page
