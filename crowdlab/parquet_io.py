"""Atomic Parquet writes shared by every package that lands tables on disk.

A table is written to a temporary file in the destination folder and renamed into place, so a
crash mid-write never leaves a partial file at the final path (rename is atomic on POSIX when
source and target share a file system).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_table_atomic(table: pa.Table, path: str | os.PathLike[str], **write_options: object) -> Path:
    """Write ``table`` to ``path`` as Parquet, all or nothing."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target
