"""Declarative scenarios (kind: declarative): bad input named at load time, sandboxed templates,
settle rules and payoffs, the formula baseline, history in prompts, and loading next to
version-1 runs."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from crowdlab.analysis import load
from crowdlab.experiments import run
from crowdlab.experiments.config import load_config
from crowdlab.experiments.errors import ConfigError
from crowdlab.experiments.prepare import preflight
from crowdlab.experiments.scenarios import DeclarativeParams, DeclarativeScenario, History
from crowdlab.experiments.scenarios.formula import Formula, FormulaError
from crowdlab.experiments.scenarios.templates import Template, TemplateError

REPO = Path(__file__).parents[2]
PUBLIC_GOODS = REPO / "experiments" / "configs" / "public_goods.yaml"
CROWDLAB = [sys.executable, "-m", "crowdlab.flows.cli"]


def public_goods(personas: Path, rounds: int = 3, **changes: Any) -> dict[str, Any]:
    cfg = yaml.safe_load(PUBLIC_GOODS.read_text())
    cfg.update({"population": {"personas": str(personas)}, "rounds": rounds, "shard_size": 250, **changes})
    cfg["scenario"]["prompts"]["user"] = "Your education: {{ persona.education }}."
    return cfg


def write(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def set_path(cfg: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    node: Any = cfg
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(leaf)] = value
    else:
        node[leaf] = value
    return cfg


FIELDS = "scenario.questions.0.fields"
BAD = [
    (f"{FIELDS}.contribution", {"type": "essay"}, f"{FIELDS}.contribution.type", "does not match"),
    (f"{FIELDS}.contribution", {"type": "integer", "low": 20, "high": 0}, f"{FIELDS}.contribution",
     "low (20) must be below high (0)"),
    (f"{FIELDS}.contribution", {"type": "choice", "options": ["give", "Give"]}, f"{FIELDS}.contribution.options",
     "duplicate option label 'Give'"),
    ("scenario.outcome.1.formula", "endowment - contribution + mpcr * grp_total", "scenario.outcome.1.formula",
     "unknown name 'grp_total'"),
    ("scenario.outcome.1.formula", "endowment - (contribution", "scenario.outcome.1.formula", "syntax error"),
    ("scenario.outcome.0.field", "contributions", "scenario.outcome.0.field", "no answer field 'contributions'"),
    ("scenario.prompts.system", "{{ ''.__class__.__mro__ }}", "scenario.prompts.system", "__' is not allowed"),
    ("scenario.prompts.system", "{{ endowment }}", "scenario.prompts.system", "unknown name 'endowment'"),
    ("scenario.prompts.system", "{% if %}", "scenario.prompts.system", "template syntax error on line 1"),
    ("scenario.baseline.fields.contribution", "__import__('os')", "scenario.baseline.fields.contribution",
     "unknown function '__import__'"),
]


@pytest.mark.parametrize(("where", "value", "field", "message"), BAD)
def test_bad_input_names_the_field_and_yaml_line(personas_path: Path, tmp_path: Path, where: str, value: Any,
                                                 field: str, message: str) -> None:
    path = write(tmp_path, set_path(public_goods(personas_path), where, value))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == field
    assert message in str(info.value)
    assert "line " in str(info.value)  # the YAML line of the field


def test_a_template_reading_a_missing_persona_column_fails_in_preflight(personas_path: Path) -> None:
    cfg = set_path(public_goods(personas_path), "scenario.prompts.user", "I earn {{ persona.salary }}.")
    with pytest.raises(ConfigError) as info:
        preflight(cfg)
    assert info.value.field == "scenario.prompts.user"
    assert "'salary'" in str(info.value)


def test_a_history_template_with_a_misspelt_name_fails_in_preflight(personas_path: Path) -> None:
    cfg = set_path(public_goods(personas_path), "scenario.prompts.history",
                   "{% for h in history %}{{ h.own.contribuion }}{% endfor %}")
    with pytest.raises(ConfigError) as info:
        preflight(cfg)
    assert info.value.field == "scenario.prompts.history"
    assert "contribuion" in str(info.value)
    preflight(public_goods(personas_path))  # the shipped templates render


@pytest.mark.slow
@pytest.mark.parametrize(("where", "value", "field"), [
    ("scenario.outcome.1.formula", "endowment - contribution + q", "scenario.outcome.1.formula"),
    ("scenario.prompts.user", "{{ persona.salary }}", "scenario.prompts.user"),
])
def test_cli_bad_input_is_one_line_exit_2_and_nothing_written(personas_path: Path, tmp_path: Path, where: str,
                                                              value: str, field: str) -> None:
    path = write(tmp_path, set_path(public_goods(personas_path), where, value))
    runs = tmp_path / "runs"
    out = subprocess.run(CROWDLAB + ["run", str(path), "--no-prefect", "--runs-root", str(runs)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: "), out.stderr
    assert not runs.exists()


def test_templates_cannot_reach_python_or_change_variables() -> None:
    for source in ("{{ ''.__class__ }}", "{{ params['__class__'] }}", "{{ params|attr('__dict__') }}"):
        with pytest.raises(TemplateError, match="not allowed"):
            Template(source, "prompts.user")
    mutate = Template("{{ params.update({'p': 0}) }}", "prompts.user")  # passes the static check
    params = {"p": 1}
    with pytest.raises(TemplateError, match="prompts.user: .*unsafe"):
        mutate.render({"params": params})
    assert params == {"p": 1}
    with pytest.raises(TemplateError, match="prompts.user: .*'dict object' has no attribute 'q'"):
        Template("{{ params.q }}", "prompts.user").render({"params": params})


def test_formulas_are_vectorised_and_refuse_python() -> None:
    f = Formula("max(a, 2) if a > 1 and b < 2 else -a", ["a", "b"])
    np.testing.assert_array_equal(f({"a": np.array([0.0, 3.0, 5.0]), "b": np.array([1, 1, 3])}), [-0.0, 3.0, -5.0])
    for source in ("a.__class__", "[a]", "'text'", "(lambda: 1)()", "open('x')", "a +"):
        with pytest.raises(FormulaError):
            Formula(source, ["a"])


@pytest.mark.slow
def test_public_goods_settles_payoffs_and_is_shard_invariant(personas_path: Path, tmp_path: Path) -> None:
    a = run(public_goods(personas_path), run_id="a", runs_root=tmp_path)
    b = run(public_goods(personas_path, shard_size=600), run_id="b", runs_root=tmp_path)
    dec = ds.dataset(a.run_dir / "decisions", format="parquet").to_table().sort_by(
        [("round", "ascending"), ("agent_id", "ascending")])
    dec_b = ds.dataset(b.run_dir / "decisions", format="parquet").to_table().sort_by(
        [("round", "ascending"), ("agent_id", "ascending")])
    assert dec["text"].equals(dec_b["text"])  # a decision depends on its seed only
    assert dec.schema.field("answer_contribution").type == pa.int64()
    assert dec["valid"].to_numpy(zero_copy_only=False).all()
    rounds = pq.read_table(a.run_dir / "rounds.parquet")
    one = dec.filter(pc.equal(dec["round"], 2)).to_pandas()
    one["gid"] = one["agent_id"] // 4
    totals = one.groupby("gid")["answer_contribution"].sum()
    r2 = rounds.filter(pc.and_(pc.equal(rounds["round"], 2), pc.greater_equal(rounds["group"], 0))).to_pandas()
    r2 = r2.set_index("group").sort_index()
    np.testing.assert_array_equal(r2["outcome_group_total"].to_numpy(), totals.to_numpy())
    payoff = 20 - one["answer_contribution"] + 0.4 * one["gid"].map(totals)
    np.testing.assert_allclose(r2["outcome_payoff"].to_numpy(), payoff.groupby(one["gid"]).mean().to_numpy())
    pooled = rounds.filter(pc.equal(rounds["group"], -1)).sort_by("round")["mean"].to_numpy()
    assert pooled[0] > pooled[-1]  # conditional cooperation decays
    # loading: typed columns are not design factors; a version-1-style run (built-in scenario,
    # no typed columns) loads beside it, its typed columns null
    beauty = run({"experiment": "test", "population": {"personas": str(personas_path)},
                  "scenario": {"kind": "beauty_contest"}, "backend": {"kind": "behavioral"}, "rounds": 1,
                  "shard_size": 600}, run_id="old", runs_root=tmp_path)
    data = load([a.run_dir, beauty.run_dir])
    assert data.factor_columns == []
    both = data.read_decisions(columns=["run_id", "answer_contribution"])
    assert both.loc[both["run_id"] == "old", "answer_contribution"].isna().all()
    assert both.loc[both["run_id"] == "a", "answer_contribution"].notna().all()
    assert "outcome_payoff" not in data.conditions.columns


def test_prompts_show_own_answers_payoffs_and_group_values() -> None:
    cfg = yaml.safe_load(PUBLIC_GOODS.read_text())["scenario"]
    scen = DeclarativeScenario(DeclarativeParams.model_validate(cfg))
    public = pa.table({"round": pa.array([1, 1, 1], pa.int32()), "group": pa.array([0, 1, -1], pa.int32()),
                       "n": [4, 4, 8], "n_valid": [4, 4, 8], "n_invalid": [0, 0, 0], "mean": [5.0, 2.0, 3.5],
                       "median": [5.0, 2.0, 3.5], "std": [1.0, 1.0, 1.0], "target": [None, None, None],
                       "winning_value": [None, None, None], "outcome_group_total": [20.0, 8.0, 28.0],
                       "outcome_payoff": [23.0, 21.2, 22.1]})
    texts = pa.array(['{"reasoning": "fair", "contribution": 5}'] * 8)
    history = History(round=2, total_rounds=10, public=public, own_values=np.full((8, 1), 5.0), own_texts=(texts,))
    ids = np.arange(8)
    groups = scen.assign_groups(ids)
    chats = scen.render(ids, groups, pa.table({"agent_id": ids, "description": ["a person"] * 8}), history,
                        np.array([4, 4]))
    assert chats[0][0]["content"] == chats[7][0]["content"]  # shared system prompt
    assert '"contribution": <a whole number from 0 to 20>' in chats[0][0]["content"]
    user0, user7 = chats[0][1]["content"], chats[7][1]["content"]
    assert "About you: a person" in user0
    assert "Round 1: you contributed 5; your group contributed 20 in total; you earned 23.0 tokens." in user0
    assert "your group contributed 8 in total; you earned 18.2 tokens." in user7  # 20 - 5 + 0.4 * 8
    assert "Round 2 of 10" in user0
    ctx = scen.context(groups, history)
    np.testing.assert_array_equal(ctx["last_group_total"], [20.0] * 4 + [8.0] * 4)
    np.testing.assert_array_equal(ctx["own_last_contribution"], [5.0] * 8)


SURVEY = {
    "kind": "declarative", "name": "survey", "groups": 2,
    "questions": [{"text": "Your view?", "fields": {
        "trust": {"type": "likert", "labels": ["low", "mid", "high"]},
        "vote": {"type": "choice", "options": ["yes", "no", "abstain"]},
        "uses": {"type": "multi_choice", "options": ["bus", "bike"]},
    }}],
    "outcome": [
        {"rule": "aggregate", "name": "trust_share", "field": "trust", "stat": "share"},
        {"rule": "aggregate", "name": "votes", "field": "vote", "stat": "distribution"},
        {"rule": "aggregate", "name": "uses_share", "field": "uses", "stat": "share"},
        {"rule": "aggregate", "name": "trust_median", "field": "trust", "stat": "median"},
    ],
}


def test_shares_and_distributions_per_group() -> None:
    scen = DeclarativeScenario(DeclarativeParams.model_validate(SURVEY))
    texts = ['{"trust": 3, "vote": "yes", "uses": ["bus"]}', '{"trust": "low", "vote": "no", "uses": []}',
             '{"trust": 3, "vote": "yes", "uses": ["bus", "bike"]}', "garbage"]
    ids = np.arange(4)
    valid, errors = scen.check(scen.parse(texts))
    cols, valid, errors = scen.answer_columns(np.array(texts, dtype=object), valid, np.array(errors, dtype=object))
    assert valid.tolist() == [True, True, True, False] and errors[3] == "unparseable"
    decisions = pa.table({"agent_id": ids, "group": scen.assign_groups(ids), "value": scen.parse(texts),
                          "valid": valid, **cols})
    out = {r["group"]: r for r in scen.settle(decisions).to_pylist()}
    # group 0 = agents 0 and 2, group 1 = agent 1 (agent 3 invalid)
    assert out[0]["outcome_trust_share"] == {"1": 0.0, "2": 0.0, "3": 1.0}
    assert out[1]["outcome_votes"] == {"yes": 0, "no": 1, "abstain": 0}
    assert out[-1]["outcome_votes"] == {"yes": 2, "no": 1, "abstain": 0}
    assert out[0]["outcome_uses_share"] == {"bus": 1.0, "bike": 0.5}
    assert out[-1]["outcome_trust_median"] == 3.0 and out[-1]["mean"] == pytest.approx(7 / 3)
    assert out[-1]["n_valid"] == 3 and out[-1]["n_invalid"] == 1


def test_a_seeded_sample_of_others_answers_is_shown_never_ones_own() -> None:
    cfg = yaml.safe_load(PUBLIC_GOODS.read_text())["scenario"]
    cfg["outcome"].append({"rule": "sample", "name": "peers", "field": "contribution", "k": 2})
    cfg["prompts"].pop("history")  # the default history block
    scen = DeclarativeScenario(DeclarativeParams.model_validate(cfg))
    ids = np.arange(8)
    texts = [f'{{"contribution": {c}}}' for c in (0, 1, 2, 3, 10, 11, 12, 13)]
    seeds = np.array([5, 1, 7, 3, 2, 8, 4, 6])  # group 0 (ids 0-3) by seed: 1, 3, 0, 2
    valid, errors = scen.check(scen.parse(texts))
    cols, valid, _ = scen.answer_columns(np.array(texts, dtype=object), valid, np.array(errors, dtype=object))
    decisions = pa.table({"agent_id": ids, "group": scen.assign_groups(ids), "value": scen.parse(texts),
                          "valid": valid, "seed": seeds, **cols})
    assert "seed" in scen.settle_columns()
    out = scen.settle(decisions)
    rows = {r["group"]: r["outcome_peers"] for r in out.to_pylist()}
    assert rows[0] == [{"agent_id": 1, "answer": "1"}, {"agent_id": 3, "answer": "3"}, {"agent_id": 0, "answer": "0"}]
    assert rows[-1] == []
    public = out.append_column("round", pa.array([1] * out.num_rows, pa.int32())).select(scen.public_columns)
    history = History(round=2, total_rounds=10, public=public, own_values=np.zeros((8, 1)),
                      own_texts=(pa.array(texts),))
    chats = scen.render(ids, scen.assign_groups(ids), pa.table({"agent_id": ids, "description": ["x"] * 8}),
                        history, np.array([4, 4]))
    assert "peers 3, 0" in chats[1][1]["content"]  # agent 1 was sampled: it sees the next two
    assert "peers 1, 3" in chats[2][1]["content"]
