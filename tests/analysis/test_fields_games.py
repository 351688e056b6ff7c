"""The shipped dictator, ultimatum and survey configs: their behavioural baselines (Fehr-Schmidt
type shares through one named draw, agent_uniform(k)), the ultimatum's settled outcomes, and the
answer-field reference rows they meet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import yaml

from crowdlab.analysis import load
from crowdlab.analysis.field_reference import field_fidelity, field_reference
from crowdlab.experiments import run

REPO = Path(__file__).parents[2]


def config(name: str, n: int) -> dict:
    cfg = yaml.safe_load((REPO / "experiments" / "configs" / f"{name}.yaml").read_text())
    cfg["population"].update(n=n, spec=str(REPO / cfg["population"]["spec"]))
    return cfg


def test_ultimatum_types_from_one_draw_and_settled_acceptance(tmp_path):
    result = run(config("ultimatum", 2000), run_id="u", runs_root=tmp_path)
    dec = ds.dataset(result.run_dir / "decisions", format="parquet").to_table().to_pandas().sort_values("agent_id")
    assert dec["valid"].all()
    thresholds = dec["answer_min_accept"].value_counts(normalize=True)
    # alpha = 0, 0.5, 1, 4 for 30/30/30/10 %: one draw per agent decides among four types (three
    # independent draws would give 30/42/25/3 %)
    for points, share in ((0, 0.3), (3, 0.3), (4, 0.3), (5, 0.1)):
        assert thresholds[points] == pytest.approx(share, abs=0.04)
    assert set(dec["answer_offer"]) == {4, 5}
    assert (dec["answer_offer"] == 5).mean() == pytest.approx(0.4, abs=0.04)
    # pairs of consecutive ids: an offer is accepted when it reaches the partner's threshold
    partner = dec["agent_id"].to_numpy() ^ 1
    by_id = dec.set_index("agent_id")
    accepted = dec["answer_offer"].to_numpy() >= by_id.loc[partner, "answer_min_accept"].to_numpy()
    rounds = pd.read_parquet(result.run_dir / "rounds.parquet")
    pooled = rounds[rounds["group"] == -1].iloc[0]
    assert pooled["outcome_accepted"] == pytest.approx(accepted.mean())
    offer, partner_offer = dec["answer_offer"].to_numpy(), by_id.loc[partner, "answer_offer"].to_numpy()
    payoff = np.where(accepted, 10 - offer, 0) + np.where(partner_offer >= dec["answer_min_accept"].to_numpy(),
                                                          partner_offer, 0)
    assert pooled["outcome_payoff"] == pytest.approx(payoff.mean())
    fid = field_fidelity(load(result.run_dir)).set_index("field")
    assert set(fid["dataset"]) == {"oosterbeek2004"}
    assert fid.at["offer", "sim"] == pytest.approx(offer.mean() / 10)
    # the settled outcome against the human rejection rate: per-pair shares, interval over pairs
    per_pair = pd.Series(accepted).groupby(dec["agent_id"].to_numpy() // 2).mean()
    assert fid.at["outcome:accepted", "sim"] == pytest.approx(per_pair.mean())
    assert fid.at["outcome:accepted", "n_valid"] == 1000 and fid.at["outcome:accepted", "human"] == 0.84
    half = 1.959963984540054 * per_pair.std(ddof=1) / np.sqrt(1000)
    assert fid.at["outcome:accepted", "sim_ci_high"] == pytest.approx(per_pair.mean() + half)


def test_dictator_baseline_gives_half_or_nothing(tmp_path):
    result = run(config("dictator", 1000), run_id="d", runs_root=tmp_path)
    give = ds.dataset(result.run_dir / "decisions", format="parquet").to_table()["answer_give"].to_numpy()
    assert set(give) == {0, 5} and (give == 5).mean() == pytest.approx(0.4, abs=0.04)


def test_reference_rows_name_their_source_and_game():
    ref = field_reference()
    assert ref["source"].notna().all() and (ref["source"].str.len() > 20).all()
    assert set(ref["game"]) == {"dictator", "ultimatum", "public_goods"}
    for game in set(ref["game"]):  # every game with reference rows ships as a config of that name
        cfg = yaml.safe_load((REPO / "experiments" / "configs" / f"{game}.yaml").read_text())
        fields = {f for q in cfg["scenario"]["questions"] for f in q["fields"]}
        outcomes = {r["name"] for r in cfg["scenario"].get("outcome", []) if "name" in r}
        named = {f.split(":", 1)[1] if f.startswith("outcome:") else f for f in ref.loc[ref["game"] == game, "field"]}
        assert cfg["scenario"]["name"] == game and named <= fields | outcomes
    assert ref[["value", "value_low", "value_high"]].notna().any(axis=1).all()
