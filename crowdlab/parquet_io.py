"""Atomic Parquet writes shared by every package that lands tables on disk.

A table is written to a temporary file in the destination folder and renamed into place, so a
crash mid-write never leaves a partial file at the final path (rename is atomic on POSIX when
source and target share a file system).

Files get the permissions an ordinary ``open(path, "w")`` would give them (0666 minus the
process umask, e.g. 0644), not ``tempfile.mkstemp``'s private 0600: colleagues and Ray workers
running under another uid must be able to read a run.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

#: Temporary files are named ``.<target name>.<random>.tmp``: readers skip names starting with
#: "." (pyarrow, pandas, polars) or not ending in ".parquet" (DuckDB globs).
TMP_SUFFIX = ".tmp"


def _create_temp(target: Path) -> tuple[int, str]:
    """Create a new, empty temp file beside ``target``; the kernel applies the umask to 0o666.

    ``tempfile.mkstemp`` always creates 0600 files; ``os.open`` with ``O_EXCL`` is as safe
    against name clashes and, unlike reading the umask with ``os.umask`` (set and reset), it is
    thread-safe.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        name = str(target.parent / f".{target.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue


def write_table_atomic(table: pa.Table, path: str | os.PathLike[str], **write_options: object) -> Path:
    """Write ``table`` to ``path`` as Parquet, all or nothing."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = _create_temp(target)
    os.close(fd)
    try:
        pq.write_table(table, tmp_name, **write_options)  # type: ignore[arg-type]
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> Path:
    """Write a small text file (a manifest, a report) all or nothing."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = _create_temp(target)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target
