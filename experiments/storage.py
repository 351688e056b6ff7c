"""Where a run's files live and how its manifest is read and written (docs/contracts.md)."""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from crowdlab.parquet_io import write_text_atomic

MANIFEST = "manifest.json"
PERSONAS = Path("personas") / "personas.parquet"
ROUNDS = "rounds.parquet"


def run_path(runs_root: str | Path, experiment: str, run_id: str) -> Path:
    return Path(runs_root) / experiment / run_id


# Folder names carry the keys for people, not for readers: ``c000/replicate-0/round-1``, not the
# hive form ``condition_id=c000/replicate=0/round=1``. Hive names made pandas, pyarrow and DuckDB
# add inferred partition columns (dictionary strings, int32 or int64 by reader) beside the same
# columns stored in the files, and pandas.read_parquet("<run>/decisions") failed to merge them.
# Without ``key=value`` segments every reader takes the files' own columns with the schema's
# types. Runs written before the change keep their hive folders; the functions below go on
# using them for those runs, so resuming an old run never writes a shard twice.
_HIVE_PREFIX = "condition_id="


def _condition_dir(run_dir: Path, table: str, condition_id: str) -> tuple[Path, bool]:
    """The condition's folder under ``decisions/`` or ``rounds/`` and whether it is a hive one."""
    hive = run_dir / table / f"{_HIVE_PREFIX}{condition_id}"
    if hive.is_dir():
        return hive, True
    return run_dir / table / condition_id, False


def decision_path(run_dir: Path, condition_id: str, replicate: int, round_: int, shard: int) -> Path:
    folder, hive = _condition_dir(run_dir, "decisions", condition_id)
    if hive:
        return folder / f"replicate={replicate}" / f"round={round_}" / f"shard-{shard:05d}.parquet"
    return folder / f"replicate-{replicate}" / f"round-{round_}" / f"shard-{shard:05d}.parquet"


def prompt_path(run_dir: Path, condition_id: str, replicate: int, round_: int, shard: int,
                table: str = "prompts") -> Path:
    """A shard's file of the prompt audit trail (``prompts`` or ``prompt_messages``): the
    decisions file's path under another top folder, in the run's layout."""
    decisions = decision_path(run_dir, condition_id, replicate, round_, shard)
    return run_dir / table / decisions.relative_to(run_dir / "decisions")


def round_part_path(run_dir: Path, condition_id: str, replicate: int, round_: int) -> Path:
    folder, hive = _condition_dir(run_dir, "rounds", condition_id)
    if hive:
        return folder / f"replicate={replicate}" / f"round={round_}.parquet"
    return folder / f"replicate-{replicate}" / f"round-{round_}.parquet"


def read_manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    write_text_atomic(json.dumps(manifest, indent=2, sort_keys=False), run_dir / MANIFEST)


# Config fields that never change decisions: left out of the hash, so a run may be resumed with
# other values (more concurrency, a Ray fleet instead of threads, a wider failure tolerance).
RESUMABLE_FIELDS = ("max_concurrent_shards", "description", "dispatch", "max_failed_share")
# Config fields added later whose unset value (None) leaves the hash as it was without them.
OPTIONAL_FIELDS = ("network",)


def config_hash(config_json: dict[str, Any]) -> str:
    """Hash of everything that changes results (see ``RESUMABLE_FIELDS`` for what does not)."""
    data = {k: v for k, v in config_json.items() if k not in RESUMABLE_FIELDS}
    for key in OPTIONAL_FIELDS:  # unset: hashed as before the field existed, so older runs resume
        if data.get(key) is None:
            data.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("crowdlab", "numpy", "pyarrow", "pydantic", "scipy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def read_parquet(path: Path, columns: list[str] | None = None):  # -> pa.Table
    return pq.read_table(path, columns=columns)
