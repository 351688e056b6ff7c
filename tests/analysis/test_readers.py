"""Researchers read a run's decisions/ and rounds/ folders directly with pandas, pyarrow, DuckDB
and polars, and get the schema's columns and types (docs/contracts.md). Old runs, written with
hive folder names, still load and resume in their own layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crowdlab.analysis import load
from crowdlab.experiments import run
from crowdlab.experiments.schema import decisions_schema
from crowdlab.parquet_io import write_table_atomic

KEYS = ["condition_id", "replicate", "round", "agent_id"]


def _config(personas: Path) -> dict:
    return {
        "experiment": "readers", "population": {"personas": str(personas)},
        "scenario": {"kind": "beauty_contest"}, "backend": {"kind": "behavioral"}, "rounds": 2,
        "shard_size": 40, "seed": 5,
        "design": {"factors": {"scenario.p": [0.5, 0.6667]}, "replicates": 2},
    }


@pytest.fixture(scope="module")
def personas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readers")
    return write_table_atomic(pa.table({"agent_id": np.arange(100, dtype=np.int64)}), root / "personas.parquet")


@pytest.fixture(scope="module")
def run_dir(personas: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(_config(personas), run_id="r1", runs_root=tmp_path_factory.mktemp("runs")).run_dir


def _expected(run_dir: Path) -> pd.DataFrame:
    table = load(run_dir).decisions_dataset.to_table()
    return table.to_pandas().sort_values(KEYS, ignore_index=True)


def _check(frame: pd.DataFrame, run_dir: Path) -> None:
    expected = _expected(run_dir)
    assert list(frame.columns) == list(expected.columns) == decisions_schema(["scenario.p"], prompt_hash=True).names
    frame = frame.sort_values(KEYS, ignore_index=True)
    assert len(frame) == 100 * 2 * 2 * 2
    for col in ("condition_id", "replicate", "round", "agent_id", "seed", "value", "scenario.p"):
        assert frame[col].astype(str).tolist() == expected[col].astype(str).tolist(), col


def test_pandas_and_pyarrow_read_the_decisions_folder(run_dir: Path) -> None:
    frame = pd.read_parquet(run_dir / "decisions")
    assert str(frame["replicate"].dtype) == "int32" and str(frame["round"].dtype) == "int32"
    assert not isinstance(frame["condition_id"].dtype, pd.CategoricalDtype)  # the file's string, no hive guess
    _check(frame, run_dir)
    table = pq.read_table(run_dir / "decisions")
    assert table.schema.field("condition_id").type == pa.string()
    assert table.schema.field("replicate").type == pa.int32()


def test_duckdb_reads_the_decisions_folder(run_dir: Path) -> None:
    con = duckdb.connect()
    frame = con.sql(f"select * from read_parquet('{run_dir}/decisions/**/*.parquet')").df()
    types = {row[0]: row[1] for row in con.sql(f"describe select * from '{run_dir}/decisions/**/*.parquet'").fetchall()}
    assert types["replicate"] == "INTEGER" and types["round"] == "INTEGER" and types["condition_id"] == "VARCHAR"
    _check(frame, run_dir)
    by_condition = con.sql(f"select condition_id, count(*) from '{run_dir}/decisions/**/*.parquet' "
                           "group by all order by 1").fetchall()
    assert by_condition == [("c000", 400), ("c001", 400)]


def test_polars_reads_the_decisions_folder(run_dir: Path) -> None:
    frame = pl.read_parquet(run_dir / "decisions")
    assert frame.schema["replicate"] == pl.Int32 and frame.schema["condition_id"] == pl.String
    _check(frame.to_pandas(), run_dir)
    lazy = pl.scan_parquet(f"{run_dir}/decisions/**/*.parquet").filter(pl.col("round") == 2).collect()
    assert lazy.height == 400


def test_all_readers_read_the_rounds_folder(run_dir: Path) -> None:
    expected = pq.read_table(run_dir / "rounds.parquet").to_pandas().sort_values(["condition_id", "replicate",
                                                                                  "round", "group"])
    frames = {
        "pandas": pd.read_parquet(run_dir / "rounds"),
        "duckdb": duckdb.sql(f"select * from '{run_dir}/rounds/**/*.parquet'").df(),
        "polars": pl.read_parquet(run_dir / "rounds").to_pandas(),
    }
    for name, frame in frames.items():
        assert list(frame.columns) == list(expected.columns), name
        frame = frame.sort_values(["condition_id", "replicate", "round", "group"])
        assert frame["mean"].tolist() == pytest.approx(expected["mean"].tolist(), nan_ok=True), name
        assert frame["replicate"].astype(str).tolist() == expected["replicate"].astype(str).tolist(), name


def _to_hive(run_dir: Path) -> None:
    """Rename a run's folders to the layout runs had before: condition_id=c000/replicate=0/round=1."""
    for table in ("decisions", "rounds"):
        for cond in sorted((run_dir / table).iterdir()):
            for rep in sorted(cond.iterdir()):
                for rnd in sorted(rep.iterdir()):
                    rnd.rename(rep / rnd.name.replace("round-", "round="))
                rep.rename(cond / rep.name.replace("replicate-", "replicate="))
            cond.rename(cond.parent / f"condition_id={cond.name}")


def test_old_runs_with_hive_folders_load_and_resume_in_their_layout(personas: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    old = run(_config(personas), run_id="old", runs_root=root).run_dir
    reference = _expected(old)
    _to_hive(old)
    assert (old / "decisions/condition_id=c001/replicate=1/round=2/shard-00002.parquet").is_file()
    loaded = load(old).decisions_dataset.to_table().to_pandas().sort_values(KEYS, ignore_index=True)
    pd.testing.assert_frame_equal(loaded, reference)
    # interrupted in its last round: one shard and the round's settlement missing, rounds.parquet not built
    (old / "decisions/condition_id=c001/replicate=1/round=2/shard-00002.parquet").unlink()
    (old / "rounds/condition_id=c001/replicate=1/round=2.parquet").unlink()
    (old / "rounds.parquet").unlink()
    resumed = run(_config(personas), run_id="old", runs_root=root)
    assert resumed.n_decisions == 800
    assert (old / "decisions/condition_id=c001/replicate=1/round=2/shard-00002.parquet").is_file()
    assert (old / "rounds/condition_id=c001/replicate=1/round=2.parquet").is_file()
    assert sorted(p.name for p in (old / "decisions").iterdir()) == ["condition_id=c000", "condition_id=c001"]
    again = load(old).decisions_dataset.to_table().to_pandas().sort_values(KEYS, ignore_index=True)
    pd.testing.assert_frame_equal(again.drop(columns=["latency_s"]), reference.drop(columns=["latency_s"]))
    shutil.rmtree(root)
