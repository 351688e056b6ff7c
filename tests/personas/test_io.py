"""Parquet round trip, provenance metadata, and atomic writes."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from crowdlab.personas import load_spec, read_personas, read_spec_info, sample, write_personas


@pytest.fixture
def spec(populations):
    return load_spec(populations / "paper_occupation.yaml")


def test_round_trip_with_metadata(tmp_path, spec) -> None:
    table = sample(spec, 120, seed=5)
    path = write_personas(table, tmp_path / "sub" / "personas.parquet", spec=spec, seed=5)
    back = read_personas(path)
    assert back.select(table.column_names).equals(table)
    info = read_spec_info(path)
    assert (info.spec_name, info.seed, info.n, info.spec_hash) == ("paper_occupation", 5, 120, spec.spec_hash)
    assert info.spec == spec
    assert info.faker_version


def test_crash_mid_write_leaves_no_partial_file(tmp_path, spec, monkeypatch) -> None:
    target = tmp_path / "personas.parquet"
    real_write = pq.write_table

    def half_write(table, where, **kwargs):
        real_write(table.slice(0, 10), where, **kwargs)  # some bytes reach the temp file...
        raise OSError("disk full")  # ...then the write dies

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(OSError, match="disk full"):
        write_personas(sample(spec, 100, seed=1), target, spec=spec, seed=1)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_file_survives_failed_overwrite(tmp_path, spec, monkeypatch) -> None:
    target = tmp_path / "personas.parquet"
    write_personas(sample(spec, 30, seed=1), target, spec=spec, seed=1)
    monkeypatch.setattr(pq, "write_table", lambda *a, **k: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError):
        write_personas(sample(spec, 60, seed=2), target, spec=spec, seed=2)
    assert read_personas(target).num_rows == 30


def test_table_without_agent_id_is_refused(tmp_path, spec) -> None:
    with pytest.raises(ValueError, match="agent_id"):
        write_personas(sample(spec, 5, seed=1).drop(["agent_id"]), tmp_path / "x.parquet")
