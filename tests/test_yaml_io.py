"""crowdlab.yaml_io: a key given twice is refused, in experiment configs as in population specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from crowdlab.yaml_io import DuplicateKeyError, safe_load

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "experiments" / "configs" / "baseline.yaml"


def test_duplicates_are_refused_with_path_and_lines() -> None:
    with pytest.raises(DuplicateKeyError) as info:
        safe_load("a: 1\nitems:\n  - name: x\n    low: 1\n    low: 2\n")
    err = info.value
    assert err.path == ("items", 0) and err.names == (None, "x") and err.key == "low"
    assert (err.line, err.first_line) == (5, 4)
    assert str(err) == "items.0: duplicate key 'low' (line 5)"
    assert isinstance(err, yaml.YAMLError)  # handlers that catch YAMLError still catch it
    with pytest.raises(DuplicateKeyError, match=r"^document: duplicate key 'rounds' \(line 3\)"):
        safe_load("rounds: 1\nseed: 2\nrounds: 4\n")
    with pytest.raises(DuplicateKeyError, match="duplicate key '1'"):
        safe_load("{1: a, 0x1: b}")  # equal once read


def test_what_yaml_allows_still_loads() -> None:
    text = "base: &b {k: 1, j: 2}\nother:\n  <<: *b\n  k: 3\nagain: *b\nlist: [{k: 1}, {k: 1}]\n"
    assert safe_load(text) == {"base": {"k": 1, "j": 2}, "other": {"k": 3, "j": 2}, "again": {"k": 1, "j": 2}, "list": [{"k": 1}, {"k": 1}]}
    assert safe_load(DEMO.read_text()) == yaml.safe_load(DEMO.read_text())


def test_config_with_a_duplicate_key_fails_naming_it(tmp_path) -> None:
    from crowdlab.experiments import ConfigError, load_config

    text = DEMO.read_text().replace("rounds: 4\n", "rounds: 4\nrounds: 1\n")
    line = text.splitlines().index("rounds: 1") + 1
    (tmp_path / "dup.yaml").write_text(text.replace("data/populations", str(REPO / "data" / "populations")))
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "dup.yaml")
    assert str(info.value) == f"config: duplicate key 'rounds' (dup.yaml line {line})"
    nested = DEMO.read_text().replace("  tau: 1.5\n", "  tau: 1.5\n  tau: 3\n")
    (tmp_path / "nested.yaml").write_text(nested)
    with pytest.raises(ConfigError, match=r"^backend: duplicate key 'tau' \(nested.yaml line \d+\)"):
        load_config(tmp_path / "nested.yaml")


def test_crowdlab_run_refuses_it_in_one_line_with_exit_code_2(tmp_path) -> None:
    from crowdlab.flows.cli import app

    config = tmp_path / "dup.yaml"
    config.write_text(DEMO.read_text().replace("  n: 1000\n", "  n: 1000\n  n: 10\n"))
    result = CliRunner().invoke(app, ["run", str(config), "--no-prefect", "--runs-root", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "population: duplicate key 'n' (dup.yaml line 8)" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()
