"""describe() puts realised distributions next to targets, and its fit figure can fail."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from crowdlab.personas import describe, load_spec, parse_spec, sample

SPEC = {
    "name": "t",
    "attributes": [
        {"name": "c", "kind": "categorical", "percentages": {"a": 70, "b": 30}},
        {"name": "x", "kind": "normal", "mean": 50, "std": 10, "low": 20, "high": 80},
        {
            "name": "y",
            "kind": "conditional",
            "on": "c",
            "cases": {"a": {"kind": "categorical", "values": ["u", "v"]}, "b": {"kind": "categorical", "weights": {"u": 1, "v": 9}}},
        },
        {"name": "t", "kind": "template", "template": "{c}-{y}"},
    ],
}


def test_sampled_table_fits_its_spec() -> None:
    spec = parse_spec(SPEC)
    fit = describe(sample(spec, 50_000, seed=1), spec)
    by_name = {a.name: a for a in fit.attributes}
    assert by_name["c"].tvd < 0.01 and by_name["x"].tvd < 0.01 and by_name["y"].tvd < 0.01
    assert by_name["t"].tvd is None and "distinct" in by_name["t"].note
    c_rows = {r.label: r for r in by_name["c"].rows}
    assert c_rows["a"].target == 0.7 and abs(c_rows["a"].realised - 0.7) < 0.01
    x_rows = {r.label: r for r in by_name["x"].rows}
    assert abs(x_rows["mean"].target - 50) < 1e-6 and x_rows["std"].target < 10  # truncation narrows it
    assert {r.label for r in by_name["y"].rows} >= {"c=a: u", "c=b: v"}


def test_mismatched_table_is_flagged() -> None:
    spec = parse_spec(SPEC)
    table = sample(spec, 20_000, seed=2)
    shifted = table.set_column(2, "x", pa.array(table.column("x").to_numpy() + 8.0))
    flipped = table.set_column(1, "c", pa.array(np.where(table.column("c").to_numpy(zero_copy_only=False) == "a", "b", "a")))
    assert describe(shifted, spec).attributes[1].tvd > 0.1
    assert describe(flipped, spec).attributes[0].tvd > 0.35


def test_describe_reads_the_spec_from_file_metadata(tmp_path, populations) -> None:
    from crowdlab.personas import read_personas, write_personas

    spec = load_spec(populations / "general_adult.yaml")
    path = write_personas(sample(spec, 5000, seed=3), tmp_path / "p.parquet", spec=spec, seed=3)
    fit = describe(read_personas(path))
    assert fit.spec_name == "general_adult" and fit.n == 5000
    assert [a.name for a in fit.attributes] == spec.names
    long = fit.to_table()
    assert set(long.column_names) == {"attribute", "kind", "label", "target", "realised", "tvd"}
    assert long.num_rows == sum(len(a.rows) for a in fit.attributes)
