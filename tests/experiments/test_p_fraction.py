"""``p: 2/3`` in a config is exactly 2/3 (people write the game's multiplier as a fraction)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from crowdlab.experiments import ConfigError, load_config, run

CONFIG = """
experiment: frac
population: {{personas: {personas}}}
scenario: {{kind: beauty_contest, p: {p}}}
backend: {{kind: behavioral}}
rounds: 1
shard_size: 600
"""


def _write(tmp_path: Path, personas_path: Path, p: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.format(personas=personas_path, p=p))
    return path


@pytest.mark.parametrize("text, value", [("2/3", 2 / 3), (" 1 / 2", 0.5), ("4/3", 4 / 3), ("0.6667", 0.6667),
                                         ("1.5/3", 0.5)])
def test_p_is_a_number_or_a_fraction(tmp_path, personas_path, text, value):
    config = load_config(_write(tmp_path, personas_path, f'"{text}"' if text.startswith(" ") else text))
    assert config.scenario.p == value


def test_fractions_work_in_overrides_and_design_factors(tmp_path, personas_path):
    path = _write(tmp_path, personas_path, "0.5")
    assert load_config(path, {"scenario.p": "2/3"}).scenario.p == 2 / 3
    result = run(load_config(path, {"design.factors": {"scenario.p": ["1/2", "2/3"]}}), run_id="r",
                 runs_root=tmp_path / "runs")
    rounds = result.rounds().filter(pc.equal(result.rounds()["group"], -1))
    assert sorted(rounds["p"].to_pylist()) == [0.5, 2 / 3]
    assert sorted(set(rounds["scenario.p"].to_pylist())) == ["1/2", "2/3"]


@pytest.mark.parametrize("text, problem", [("2/0", "divides by zero"), ("two/3", "fraction such as 2/3"),
                                           ("-2/3", "fraction such as 2/3")])
def test_bad_fractions_name_the_field(tmp_path, personas_path, text, problem):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, personas_path, text))
    assert "scenario.p" in str(err.value) and problem in str(err.value)
