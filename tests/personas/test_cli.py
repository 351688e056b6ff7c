"""`crowdlab personas sample/describe` through typer's CliRunner."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from crowdlab.flows.cli import app
from crowdlab.personas import read_personas, read_spec_info

runner = CliRunner()


def test_sample_then_describe(tmp_path, populations) -> None:
    out = tmp_path / "personas.parquet"
    result = runner.invoke(
        app, ["personas", "sample", str(populations / "paper_education.yaml"), "-n", "1000", "--seed", "4", "-o", str(out), "--chunk-size", "300"]
    )
    assert result.exit_code == 0, result.output
    table = read_personas(out)
    assert table.num_rows == 1000 and table.column("agent_id").to_pylist() == list(range(1000))
    assert read_spec_info(out).seed == 4
    shown = runner.invoke(app, ["personas", "describe", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "paper_education" in shown.output and "education" in shown.output and "20.00%" in shown.output
    assert "TVD" in shown.output


def test_chunked_cli_equals_library_sample(tmp_path, populations) -> None:
    from crowdlab.personas import load_spec, sample

    out = tmp_path / "p.parquet"
    spec_path = populations / "multi_locale.yaml"
    result = runner.invoke(app, ["personas", "sample", str(spec_path), "-n", "777", "--seed", "2", "-o", str(out), "--chunk-size", "100"])
    assert result.exit_code == 0, result.output
    expected = sample(load_spec(spec_path), 777, seed=2)
    assert read_personas(out).select(expected.column_names).equals(expected)


@pytest.mark.parametrize(
    ("spec_text", "args", "fragment"),
    [
        ("name: t\nattributes:\n  - {name: x, kind: gamma}\n", [], "unknown distribution kind 'gamma'"),
        ("name: t\nattributes:\n  - {name: x, kind: categorical, values: [a, b\n", [], "malformed YAML"),
        ("name: t\nattributes:\n  - {name: x, kind: categorical, counts: {a: 1, b: 2}}\n", [], "counts sum to 3 but n = 10"),
        ("name: t\nattributes:\n  - {name: x, kind: categorical, values: [a]}\n", ["-n", "0"], "n: must be a positive integer"),
    ],
)
def test_bad_input_exits_2_cleanly_and_writes_nothing(tmp_path, spec_text, args, fragment) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text, encoding="utf-8")
    out = tmp_path / "out" / "p.parquet"
    result = runner.invoke(app, ["personas", "sample", str(spec), "-n", "10", "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_missing_spec_file(tmp_path) -> None:
    result = runner.invoke(app, ["personas", "sample", str(tmp_path / "nope.yaml"), "-n", "5", "-o", str(tmp_path / "p.parquet")])
    assert result.exit_code == 2 and "cannot read" in result.output


def test_describe_missing_file(tmp_path) -> None:
    result = runner.invoke(app, ["personas", "describe", str(tmp_path / "nope.parquet")])
    assert result.exit_code == 2 and "does not exist" in result.output


INFEASIBLE = """\
name: retired_very_old
attributes:
  - {name: age, kind: uniform, low: 18, high: 80, integer: true}
  - {name: occupation, kind: categorical, percentages: {nurse: 60, retired: 40}}
constraints:
  - name: retired_over_70
    if: {occupation: {in: [retired]}}
    then: {age: {ge: 70}}
"""


def test_sample_warns_and_describe_flags_unreachable_targets(tmp_path, caplog) -> None:
    import logging

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(INFEASIBLE)
    out = tmp_path / "p.parquet"
    with caplog.at_level(logging.WARNING, logger="crowdlab.personas"):
        result = runner.invoke(app, ["personas", "sample", str(spec_path), "-n", "5000", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "from its target" in caplog.text and "attainable" in caplog.text and "realised" in caplog.text
    shown = runner.invoke(app, ["personas", "describe", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "constraints keep it from its target" in shown.output
    assert any(f"flag: {name}: " in shown.output for name in ("age", "occupation"))
    assert "attainable" in shown.output
