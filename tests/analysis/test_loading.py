import json

import pandas as pd
import pyarrow.dataset as ds
import pytest

from crowdlab.analysis import RunFolderError, load


def test_load_run_reads_all_tables(small_run):
    run = load(small_run)
    assert run.run_ids == ["run-a"]
    assert len(run.decisions) == 24  # 2 conditions x 2 rounds x 6 agents, across 2 shards each
    assert "text" not in run.decisions.columns
    assert set(run.rounds["condition_id"]) == {"c000", "c001"}
    assert list(run.personas.columns[:2]) == ["run_id", "agent_id"]
    assert run.manifest.loc[0, "status"] == "finished"
    assert run.factor_columns == ["prompt"]
    assert run.conditions.set_index("condition_id").loc["c001", "offset"] == 5.0


def test_decisions_dataset_is_lazy_pyarrow_with_projection(small_run):
    run = load(small_run)
    assert isinstance(run.decisions_dataset, ds.Dataset)
    frame = run.read_decisions(["agent_id", "value"], filter=ds.field("round") == 2)
    assert list(frame.columns) == ["agent_id", "value"]
    assert len(frame) == 12


def test_read_unknown_column_names_it(small_run):
    with pytest.raises(KeyError, match="nope"):
        load(small_run).read_decisions(["nope"])


def test_decisions_with_personas_joins_on_agent_id(small_run):
    joined = load(small_run).decisions_with_personas(persona_columns=["education"])
    row = joined[(joined["agent_id"] == 2) & (joined["round"] == 1) & (joined["condition_id"] == "c000")]
    assert row["education"].item() == "high school"
    assert row["value"].item() == 20


def test_experiment_dir_concatenates_runs(make_run, tmp_path):
    guesses = {("c000", 0, 1): [10, 20, 30]}
    make_run("run-a", guesses=guesses, conditions={"c000": {"p": 0.5}})
    make_run("run-b", guesses={("c000", 0, 1): [40, 50]}, conditions={"c000": {"p": 0.5}})
    run = load(tmp_path)
    assert run.run_ids == ["run-a", "run-b"]
    counts = run.decisions.groupby("run_id", observed=True).size()
    assert counts.to_dict() == {"run-a": 3, "run-b": 2}
    assert sorted(run.rounds["run_id"]) == ["run-a", "run-b"]


def test_temp_files_from_interrupted_writes_are_ignored(small_run):
    stray = small_run / "decisions/condition_id=c000/replicate=0/round=1/.shard-9.parquet.abc.tmp"
    stray.write_bytes(b"partial")
    assert len(load(small_run).decisions) == 24


def test_not_a_run_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match="neither a run folder"):
        load(tmp_path / "empty")
    with pytest.raises(RunFolderError, match="no such folder"):
        load(tmp_path / "missing")


def test_broken_manifest_is_reported(small_run):
    (small_run / "manifest.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="manifest.json"):
        load(small_run)


def test_rounds_read_from_parts_before_consolidation(small_run):
    rounds = pd.read_parquet(small_run / "rounds.parquet")
    (small_run / "rounds.parquet").unlink()
    for (cond, rep, rnd), part in rounds.groupby(["condition_id", "replicate", "round"]):
        path = small_run / f"rounds/condition_id={cond}/replicate={rep}/round={rnd}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        part.to_parquet(path, index=False)
    assert len(load(small_run).rounds) == 4


def test_runs_with_different_factors_unify(make_run, tmp_path):
    make_run("run-a", guesses={("c000", 0, 1): [10, 20]}, conditions={"c000": {"p": 0.5, "prompt": "P1"}})
    make_run("run-b", guesses={("c000", 0, 1): [30]}, conditions={"c000": {"p": 0.5, "ratio": "1/2"}})
    frame = load(tmp_path).read_decisions(["run_id", "prompt", "ratio"])
    by_run = frame.astype(object).set_index("run_id")
    assert by_run.loc["run-b", "prompt"] is None or pd.isna(by_run.loc["run-b", "prompt"])
    assert by_run.loc["run-b", "ratio"] == "1/2"
