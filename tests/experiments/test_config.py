"""Design expansion, model assignment and the bad-input list (clear ConfigErrors)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from crowdlab.experiments import ConfigError, expand_design, load_config, prepare_run, run, validate_config
from crowdlab.experiments.assignment import assign_models, model_counts
from crowdlab.parquet_io import write_table_atomic


def with_(cfg: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(cfg)
    out.update(changes)
    return out


def test_design_expands_in_order_with_overrides(base_config: dict) -> None:
    cfg = with_(base_config, design={"factors": {"scenario.variant": ["P1", "P2"],
                                                 "scenario.p": [0.5, 0.6667],
                                                 "backend.tau": [1.0, 2.0]}, "replicates": 2})
    conds = expand_design(validate_config(cfg))
    assert [c.condition_id for c in conds] == [f"c{i:03d}" for i in range(8)]
    assert conds[0].factors == {"scenario.variant": "P1", "scenario.p": "0.5", "backend.tau": "1"}
    assert conds[5].config.scenario.variant == "P2"
    assert conds[5].config.scenario.p == 0.5
    assert conds[5].config.backend.tau == 2.0
    assert conds[5].config.seed == base_config["seed"]


def test_design_overrides_a_model_by_label(base_config: dict) -> None:
    cfg = with_(base_config, backend=None, models=[
        {"label": "a", "backend": {"kind": "behavioral"}, "share": 1},
        {"label": "b", "backend": {"kind": "behavioral", "tau": 3}, "share": 1}],
        design={"factors": {"models.b.backend.tau": [0.5, 4.0]}})
    conds = expand_design(validate_config(cfg))
    assert [c.config.models[1].backend.tau for c in conds] == [0.5, 4.0]
    assert conds[0].config.models[0].backend.tau == 1.5


def test_model_assignment_exact_counts_and_deterministic() -> None:
    assert model_counts([1, 1, 1], 1500).tolist() == [500, 500, 500]
    assert model_counts([1, 2], 10).tolist() == [3, 7]
    a = assign_models([1, 1, 1], 1500, seed=3)
    assert np.bincount(a).tolist() == [500, 500, 500]
    assert np.array_equal(a, assign_models([1, 1, 1], 1500, seed=3))
    assert not np.array_equal(a, assign_models([1, 1, 1], 1500, seed=4))


def test_load_config_from_yaml(tmp_path: Path, base_config: dict) -> None:
    import yaml

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(base_config))
    assert load_config(path).rounds == 3
    with pytest.raises(ConfigError, match="config: file not found"):
        load_config(tmp_path / "nope.yaml")


BAD = [
    ({"scenario": {"kind": "prisoners"}}, "scenario"),
    ({"backend": {"kind": "gpt9"}}, "backend"),
    ({"scenario": {"kind": "beauty_contest", "variant": "P9"}}, "scenario.variant"),
    ({"scenario": {"kind": "beauty_contest", "p": 0}}, "scenario.p"),
    ({"scenario": {"kind": "beauty_contest", "p": -0.5}}, "scenario.p"),
    ({"scenario": {"kind": "beauty_contest", "lo": 50, "hi": 50}}, "scenario"),
    ({"rounds": 0}, "rounds"),
    ({"shard_size": 0}, "shard_size"),
    ({"design": {"factors": {"scenario.p": []}}}, "design.factors"),
    ({"design": {"factors": {"seed": [1, 2]}}}, "design.factors"),
    ({"population": {"spec": "x.yaml"}}, "population"),
]


@pytest.mark.parametrize(("change", "field"), BAD)
def test_bad_config_names_the_field(base_config: dict, change: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(with_(base_config, **change))
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_bad_factor_level_names_the_factor(base_config: dict) -> None:
    cfg = validate_config(with_(base_config, design={"factors": {"scenario.p": [0.5, 0]}}))
    with pytest.raises(ConfigError, match=r"scenario.p=0\).*scenario.p"):
        expand_design(cfg)


def test_missing_files_fail_before_any_work(base_config: dict, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match="population.personas"):
        prepare_run(with_(base_config, population={"personas": str(tmp_path / "none.parquet")}), runs_root=runs)
    with pytest.raises(ConfigError, match="population.spec"):
        prepare_run(with_(base_config, population={"spec": str(tmp_path / "none.yaml"), "n": 5}), runs_root=runs)
    assert not runs.exists()


def test_persona_columns_needed_by_variant_and_backend(base_config: dict, tmp_path: Path) -> None:
    bare = write_table_atomic(pa.table({"agent_id": pa.array(np.arange(10, dtype=np.int64))}),
                              tmp_path / "bare.parquet")
    runs = tmp_path / "runs"
    cfg = with_(base_config, population={"personas": str(bare)})
    with pytest.raises(ConfigError, match="description") as info:
        prepare_run(with_(cfg, scenario={"kind": "beauty_contest", "variant": "P5"}), runs_root=runs)
    assert info.value.field == "scenario.variant"
    with pytest.raises(ConfigError, match="education") as info:
        prepare_run(with_(cfg, backend={"kind": "behavioral", "tau_by": {"education": {"doctoral": 3}}}),
                    runs_root=runs)
    assert info.value.field == "backend"
    assert not runs.exists()


def test_run_id_with_a_different_config_is_refused(base_config: dict, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run(with_(base_config, rounds=1), run_id="r", runs_root=runs)
    with pytest.raises(ConfigError, match="different config") as info:
        run(with_(base_config, rounds=2), run_id="r", runs_root=runs)
    assert info.value.field == "run_id"
    result = run(with_(base_config, rounds=2), run_id="r", runs_root=runs, overwrite=True)
    assert result.rounds()["round"].to_pylist().count(2) == 2  # group 0 and pooled row
