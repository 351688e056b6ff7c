import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

from crowdlab.analysis import RunFolderError, load
from crowdlab.analysis.stats import replicate_ci


def _set_manifest(run_dir: Path, **fields) -> Path:
    """Give a hand-written run the manifest fields a real run has (config hash, seeds, ...)."""
    path = run_dir / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    return run_dir


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
    _set_manifest(make_run("run-a", guesses=guesses, conditions={"c000": {"p": 0.5}}), config_hash="a1")
    _set_manifest(make_run("run-b", guesses={("c000", 0, 1): [40, 50]}, conditions={"c000": {"p": 0.5}}),
                  config_hash="b2")
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
    _set_manifest(make_run("run-b", guesses={("c000", 0, 1): [30]}, conditions={"c000": {"p": 0.5, "ratio": "1/2"}}),
                  config_hash="other")
    frame = load(tmp_path).read_decisions(["run_id", "prompt", "ratio"])
    by_run = frame.astype(object).set_index("run_id")
    assert by_run.loc["run-b", "prompt"] is None or pd.isna(by_run.loc["run-b", "prompt"])
    assert by_run.loc["run-b", "ratio"] == "1/2"


def _runs_of(tmp_path: Path, make_run, specs: dict[str, dict]) -> Path:
    """Runs of one experiment: ``specs[run_id]`` holds manifest fields; every run guessed the same."""
    for run_id, fields in specs.items():
        _set_manifest(make_run(run_id, guesses={("c000", 0, 1): [30, 40, 50], ("c000", 1, 1): [20, 30, 40]},
                               conditions={"c000": {"p": 0.5}}), **fields)
    return tmp_path


def test_reruns_with_the_same_config_and_seed_are_not_pooled_as_replicates(make_run, tmp_path, caplog):
    same = {"config_hash": "9f86d081884c7d65", "seeds": {"run": 42, "population": 1}, "status": "completed"}
    specs = {"demo-1": {**same, "created_at": "2026-01-01T10:00:00+00:00"},
             "demo-2": {**same, "created_at": "2026-01-01T11:00:00+00:00"},
             "demo-3": {**same, "created_at": "2026-01-01T09:00:00+00:00", "status": "running"},
             "fresh": {**same, "seeds": {"run": 7, "population": 1}, "config_hash": "other"}}
    with caplog.at_level(logging.WARNING, logger="crowdlab.analysis.loading"):
        run = load(_runs_of(tmp_path, make_run, specs))
    assert run.run_ids == ["demo-1", "fresh"]  # completed first, then the earliest
    assert run.duplicates == {"demo-2": "demo-1", "demo-3": "demo-1"}
    [record] = [r for r in caplog.records if "left out" in r.getMessage()]
    message = record.getMessage()
    assert "demo-2, demo-3" in message and "run demo-1" in message and "--fresh-seed" in message
    assert sorted(run.decisions["run_id"].astype(str).unique()) == ["demo-1", "fresh"]
    assert sorted(run.rounds["run_id"].unique()) == ["demo-1", "fresh"]
    # two runs x two replicates = four replicate means, not eight
    from crowdlab.analysis import round_metrics
    assert len(round_metrics(run)) == 4
    assert replicate_ci(round_metrics(run), "mean")["ci_low"].notna().all()


def test_same_seed_under_another_config_is_kept(make_run, tmp_path, caplog):
    specs = {"a": {"config_hash": "h1", "seeds": {"run": 42}}, "b": {"config_hash": "h2", "seeds": {"run": 42}},
             "no-hash": {"config_hash": None}, "no-hash-2": {"config_hash": None}}
    with caplog.at_level(logging.WARNING, logger="crowdlab.analysis.loading"):
        run = load(_runs_of(tmp_path, make_run, specs))
    assert run.run_ids == ["a", "b", "no-hash", "no-hash-2"] and run.duplicates == {}
    assert not [r for r in caplog.records if "left out" in r.getMessage()]


def test_engine_reruns_dropped_and_fresh_seed_replicates_kept(tmp_path, personas_path, caplog):
    """The reported case: the same config under new run ids; then --fresh-seed's mechanism."""
    from crowdlab.experiments import load_config, run as run_experiment
    from crowdlab.experiments.config import fresh_replicate

    config = {"experiment": "e", "population": {"personas": str(personas_path)},
              "scenario": {"kind": "beauty_contest"}, "backend": {"kind": "behavioral"}, "rounds": 1,
              "shard_size": 600, "seed": 42}
    root = tmp_path / "runs"
    for run_id in ("r1", "r2"):
        run_experiment(config, run_id=run_id, runs_root=root)
    with caplog.at_level(logging.WARNING, logger="crowdlab.analysis.loading"):
        assert load(root / "e").run_ids == ["r1"]
    assert any("r2" in r.getMessage() and "r1" in r.getMessage() for r in caplog.records)
    for run_id in ("fresh-a", "fresh-b"):
        rid, overrides = fresh_replicate(run_id, {})
        run_experiment(dict(config, **overrides), run_id=rid, runs_root=root)
    pooled = load(root / "e")
    assert pooled.run_ids == ["fresh-a", "fresh-b", "r1"]
    means = pooled.rounds.query("group == -1").set_index("run_id")["mean"]
    assert means["fresh-a"] != means["fresh-b"] != means["r1"]
