"""The shipped example configs validate, expand, and the demo runs end to end."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from crowdlab.experiments import expand_design, load_config, run

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "experiments" / "configs").glob("*.yaml"))
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_config_validates(path: Path) -> None:
    config = load_config(path)
    conditions = expand_design(config)
    assert conditions and len({c.condition_id for c in conditions}) == len(conditions)


def test_baseline_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # spec paths are relative to the repository root
    result = run(load_config(REPO / "experiments" / "configs" / "baseline.yaml"), run_id="t", runs_root=tmp_path)
    pooled = result.rounds().filter(pc.equal(result.rounds()["group"], -1))
    assert pooled.num_rows == 4 and result.n_decisions == 4000 and result.n_invalid == 0
    means = pooled.sort_by("round")["mean"].to_pylist()
    assert means[0] > means[-1]
