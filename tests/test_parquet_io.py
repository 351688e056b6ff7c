"""Atomic writes respect the umask (colleagues and Ray workers under another uid read runs)."""

import os
import stat
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crowdlab.parquet_io import write_table_atomic, write_text_atomic


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def _set(mask: int) -> None:
        os.umask(mask)

    yield _set
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_0666_minus_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    table = write_table_atomic(pa.table({"x": [1, 2]}), tmp_path / "sub" / "t.parquet")
    text = write_text_atomic("{}", tmp_path / "manifest.json")
    assert _mode(table) == expected
    assert _mode(text) == expected
    assert pq.read_table(table)["x"].to_pylist() == [1, 2]
    assert text.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["manifest.json", "sub", "t.parquet"]  # no temp left


def test_a_replaced_file_takes_the_new_mode_and_failures_leave_no_temp(tmp_path, umask):
    umask(0o077)
    path = write_text_atomic("old", tmp_path / "m.json")
    umask(0o022)
    write_text_atomic("new", path)
    assert _mode(path) == 0o644 and path.read_text() == "new"
    with pytest.raises(AttributeError):
        write_table_atomic("not a table", tmp_path / "bad.parquet")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_concurrent_writers_to_one_folder_never_clash(tmp_path, umask):
    umask(0o022)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for j in range(20):
                write_table_atomic(pa.table({"x": [i, j]}), tmp_path / f"t{i}-{j}.parquet")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    files = list(tmp_path.iterdir())
    assert len(files) == 80 and {_mode(f) for f in files} == {0o644}
