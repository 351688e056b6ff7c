"""Hand-written run folders that follow docs/contracts.md exactly, for the analysis tests.

They stand in for the engine's output so the metric tests can check numbers computed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from crowdlab.experiments.schema import decisions_schema
from crowdlab.parquet_io import write_table_atomic



def write_run(
    root: Path,
    run_id: str,
    guesses: dict[tuple[str, int, int], list[float | None]],
    conditions: dict[str, dict],
    personas: pd.DataFrame | None = None,
    shards: int = 1,
    model: str = "behavioral",
) -> Path:
    """Write a run folder. ``guesses[(condition, replicate, round)]`` lists the values of agents
    0..n-1 (None = unparseable). ``conditions[c]`` holds p, offset, lo, hi and factor values."""
    run_dir = root / run_id
    factor_names = sorted({k for c in conditions.values() for k in c if k not in ("p", "offset", "lo", "hi")})
    round_rows = []
    for (cond, rep, rnd), values in guesses.items():
        game = {"p": 2 / 3, "offset": 0.0, "lo": 0.0, "hi": 100.0, **conditions[cond]}
        n = len(values)
        value = np.array([np.nan if v is None else float(v) for v in values])
        in_range = (value >= game["lo"]) & (value <= game["hi"])
        valid = ~np.isnan(value) & in_range
        error = [None if ok else ("unparseable" if np.isnan(v) else "out_of_range") for v, ok in zip(value, valid)]
        frame = pd.DataFrame({
            "run_id": run_id, "condition_id": cond, "replicate": rep, "round": rnd, "shard": 0,
            "agent_id": np.arange(n), "group": 0, "model": model, "seed": np.arange(n) + 1000 * rnd,
            "text": [("x" if v is None else f"{v}") for v in values], "value": value,
            "valid": valid, "error": error, "input_tokens": 10, "output_tokens": 1, "latency_s": 0.01,
        })
        for f in factor_names:
            frame[f] = str(conditions[cond].get(f, ""))
        schema = decisions_schema(factor_names)
        for s, part in enumerate(np.array_split(np.arange(n), shards)):
            sub = frame.iloc[part].assign(shard=s)
            path = run_dir / f"decisions/condition_id={cond}/replicate={rep}/round={rnd}/shard-{s}.parquet"
            write_table_atomic(pa.Table.from_pandas(sub, schema=schema, preserve_index=False), path)
        v = value[valid]
        target = game["offset"] + game["p"] * v.mean() if v.size else np.nan
        round_rows.append({
            "run_id": run_id, "condition_id": cond, "replicate": rep, "round": rnd, "group": -1,
            "n": n, "n_valid": int(valid.sum()), "n_invalid": int((~valid).sum()),
            "mean": v.mean() if v.size else np.nan, "median": np.median(v) if v.size else np.nan,
            "std": v.std(ddof=1) if v.size > 1 else np.nan, "target": target,
            "winning_value": np.nan, "n_winners": 0, "winner_ids": [], **game,
            **{f: str(conditions[cond].get(f, "")) for f in factor_names},
        })
    rounds = pd.DataFrame(round_rows)
    write_table_atomic(pa.Table.from_pandas(rounds, preserve_index=False), run_dir / "rounds.parquet")
    if personas is not None:
        write_table_atomic(pa.Table.from_pandas(personas, preserve_index=False),
                           run_dir / "personas/personas.parquet")
    manifest = {"run_id": run_id, "experiment": "test", "status": "finished", "config_hash": "abc",
                "seed": 7}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Path]:
    def _make(run_id: str = "run-a", **kwargs) -> Path:
        return write_run(tmp_path, run_id, **kwargs)
    return _make


@pytest.fixture
def small_run(make_run: Callable[..., Path]) -> Path:
    """Two conditions (p = 2/3 and p = 1/2 with offset 5), one replicate, two rounds, 6 agents."""
    personas = pd.DataFrame({
        "agent_id": np.arange(6, dtype=np.int64),
        "education": ["phd", "phd", "high school", "high school", "bachelor", "bachelor"],
        "age": [30, 40, 50, 60, 20, 25],
    })
    guesses = {
        ("c000", 0, 1): [50, 30, 20, 20, 40, None],   # mean 32, target 21.333 -> winner 20 (x2)
        ("c000", 0, 2): [22, 22, 10, 0, 14, 150],     # 150 out of range; mean 13.6
        ("c001", 0, 1): [10, 30, 27.5, 12.5, 50, 25],  # offset 5 + 0.5 x mean
        ("c001", 0, 2): [20, 20, 20, 10, 10, 10],
    }
    conditions = {"c000": {"p": 2 / 3, "prompt": "P1"}, "c001": {"p": 0.5, "offset": 5.0, "prompt": "P7"}}
    return make_run(guesses=guesses, conditions=conditions, personas=personas, shards=2)


@pytest.fixture(scope="session")
def engine_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run of the engine: behavioural backend, 200 agents, 3 rounds, 2 x 2 design, 2 replicates."""
    from crowdlab.experiments import run

    root = tmp_path_factory.mktemp("engine")
    n = 200
    personas = pa.table({"agent_id": np.arange(n, dtype=np.int64),
                         "education": np.array(["high school", "bachelor's", "doctoral"])[np.arange(n) % 3]})
    personas_path = write_table_atomic(personas, root / "personas.parquet")
    config = {
        "experiment": "analysis", "population": {"personas": str(personas_path)},
        "scenario": {"kind": "beauty_contest"}, "backend": {"kind": "behavioral"}, "rounds": 3,
        "shard_size": 100, "seed": 3,
        "design": {"factors": {"scenario.variant": ["P1", "P2"], "scenario.p": [0.5, 2 / 3]}, "replicates": 2},
    }
    return run(config, run_id="r1", runs_root=root / "runs").run_dir
