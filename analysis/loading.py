"""Read run folders (docs/contracts.md) into DataFrames, or into pyarrow datasets for big runs.

A *run folder* holds ``manifest.json``, ``personas/``, ``decisions/`` and ``rounds.parquet``; an
*experiment folder* holds several run folders. ``load`` accepts either (or a list of them) and
returns one :class:`RunData` whose tables carry a ``run_id`` column, so replicates run as separate
run ids concatenate naturally.

Re-running a config under a new run id repeats its seeds, and so its decisions: such runs are not
independent replicates. ``load`` keeps one run per (config hash, run seed) and leaves the others
out with a warning naming them (``RunData.duplicates``); ``crowdlab run --fresh-seed`` starts a
real new replicate (new run id, seed derived from it, so a new config hash).

Decisions are never read eagerly: a million agents over five rounds is five million rows with a
free-text column, so the object exposes a lazy pyarrow dataset and reads only the columns a
metric needs (``read_decisions(columns=...)``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

#: Invalid answers per cause in the rounds table; runs written before they existed read as null.
CAUSE_COLUMNS: tuple[str, ...] = ("n_unparseable", "n_out_of_range", "n_truncated", "n_backend_error")
#: Columns of the rounds table that are not design factors (contract order, then factors).
ROUND_FIXED_COLUMNS: tuple[str, ...] = (
    "run_id", "condition_id", "replicate", "round", "group", "n", "n_valid", "n_invalid", "mean",
    "median", "std", "target", "winning_value", "n_winners", "winner_ids", "p", "offset", "lo", "hi",
    *CAUSE_COLUMNS,
)
#: Columns of the decisions table that are not design factors.
DECISION_FIXED_COLUMNS: tuple[str, ...] = (
    "run_id", "condition_id", "replicate", "round", "shard", "agent_id", "group", "model", "seed",
    "text", "value", "valid", "error", "input_tokens", "output_tokens", "latency_s",
    "prompt_hash",  # schema version 3 (the prompt audit trail); null in older runs
)
#: A declarative scenario's typed answer columns (decisions, ``answer_<field>``, ``answer_errors``)
#: and settle-rule columns (rounds, ``outcome_<name>``): not design factors; runs without them
#: (schema version 1, or the built-in beauty contest) read them as null when mixed with others.
ANSWER_PREFIX, OUTCOME_PREFIX = "answer_", "outcome_"
#: What metrics read by default: everything but the raw answer text.
METRIC_COLUMNS: tuple[str, ...] = (
    "run_id", "condition_id", "replicate", "round", "agent_id", "group", "model", "value", "valid",
)

PathLike = str | os.PathLike[str]


class RunFolderError(ValueError):
    """A path is not a run folder, an experiment folder, or breaks the run-folder contract."""


def _is_run_dir(path: Path) -> bool:
    return (path / "manifest.json").is_file() or (path / "decisions").is_dir()


def find_run_dirs(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    """Resolve run folders from a run folder, an experiment folder, or a list of either."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise RunFolderError("no run folder given")
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if not path.exists():
            raise RunFolderError(f"{path}: no such folder")
        if _is_run_dir(path):
            found.append(path)
            continue
        children = sorted(child for child in path.iterdir() if child.is_dir() and _is_run_dir(child))
        if not children:
            raise RunFolderError(
                f"{path}: neither a run folder (manifest.json, decisions/) nor an experiment folder "
                "holding run folders"
            )
        found.extend(children)
    return found


def _read_manifest(run_dir: Path) -> dict:
    path = run_dir / "manifest.json"
    if not path.is_file():
        log.warning("%s has no manifest.json", run_dir)
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc})") from exc


def _decision_files(run_dir: Path) -> list[str]:
    root = run_dir / "decisions"
    if not root.is_dir():
        return []
    # Temp files from an interrupted write start with "." and end in ".tmp": never read them.
    return sorted(str(p) for p in root.rglob("*.parquet") if not p.name.startswith("."))


def _read_rounds(run_dir: Path) -> pa.Table | None:
    whole = run_dir / "rounds.parquet"
    if whole.is_file():
        return pq.read_table(whole)
    parts = sorted(str(p) for p in (run_dir / "rounds").rglob("*.parquet") if not p.name.startswith(".")) \
        if (run_dir / "rounds").is_dir() else []
    if not parts:
        return None
    # The consolidated file is rebuilt from these parts; before it exists, read the parts.
    return ds.dataset(parts, format="parquet").to_table()


@dataclass
class RunData:
    """Everything one or several runs wrote, with lazy access to the (large) decisions.

    ``duplicates`` maps each run left out as a repeat to the run kept in its place.
    """

    run_dirs: list[Path]
    manifests: dict[str, dict] = field(default_factory=dict)
    duplicates: dict[str, str] = field(default_factory=dict)

    @property
    def run_ids(self) -> list[str]:
        return list(self.manifests)

    # ---- small tables -------------------------------------------------------------------
    @cached_property
    def manifest(self) -> pd.DataFrame:
        """One row per run: the manifest flattened (nested keys joined with dots)."""
        rows = [{"run_id": run_id, **m} for run_id, m in self.manifests.items()]
        return pd.json_normalize(rows)

    @cached_property
    def rounds(self) -> pd.DataFrame:
        """The per-round outcomes the engine settled (all groups, ``group`` -1 is the total)."""
        frames = []
        for run_dir, run_id in zip(self.run_dirs, self.run_ids):
            table = _read_rounds(run_dir)
            if table is None:
                continue
            frame = table.to_pandas()
            if "run_id" not in frame:
                frame.insert(0, "run_id", run_id)
            for column in CAUSE_COLUMNS:
                if column not in frame:  # a run from before invalid answers were counted by cause
                    frame[column] = pd.Series(pd.NA, index=frame.index, dtype="Int64")
            frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=list(ROUND_FIXED_COLUMNS))
        return pd.concat(frames, ignore_index=True)

    @cached_property
    def personas(self) -> pd.DataFrame:
        """The persona tables, with the run id of the run that used them."""
        frames = []
        for run_dir, run_id in zip(self.run_dirs, self.run_ids):
            path = run_dir / "personas" / "personas.parquet"
            if not path.is_file():
                continue
            frame = pq.read_table(path).to_pandas()
            frame.insert(0, "run_id", run_id)
            frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=["run_id", "agent_id"])
        return pd.concat(frames, ignore_index=True)

    @cached_property
    def factor_columns(self) -> list[str]:
        """Design factors: the decision columns beyond the contract's fixed ones."""
        return [name for name in self.decisions_dataset.schema.names
                if name not in DECISION_FIXED_COLUMNS and not name.startswith(ANSWER_PREFIX)]

    @cached_property
    def conditions(self) -> pd.DataFrame:
        """One row per (run, condition): game parameters p, offset, lo, hi and factor values."""
        rounds = self.rounds
        if rounds.empty:
            raise RunFolderError(
                f"{', '.join(map(str, self.run_dirs))}: no rounds.parquet or rounds/ parts; "
                "the game parameters (p, offset, lo, hi) come from there"
            )
        factors = [c for c in rounds.columns if c not in ROUND_FIXED_COLUMNS and not c.startswith(OUTCOME_PREFIX)]
        cols = ["run_id", "condition_id", "p", "offset", "lo", "hi", *factors]
        return rounds[cols].drop_duplicates(["run_id", "condition_id"]).reset_index(drop=True)

    # ---- decisions ------------------------------------------------------------------------
    @cached_property
    def decisions_dataset(self) -> ds.Dataset:
        """All decision files of all runs as one lazy pyarrow dataset (schemas unified)."""
        files: list[str] = []
        schemas: list[pa.Schema] = []
        for run_dir in self.run_dirs:
            run_files = _decision_files(run_dir)
            if run_files:
                files.extend(run_files)
                schemas.append(ds.dataset(run_files, format="parquet").schema)
        if not files:
            raise RunFolderError(f"{', '.join(map(str, self.run_dirs))}: no decision files under decisions/")
        return ds.dataset(files, format="parquet", schema=pa.unify_schemas(schemas))

    def read_decisions(
        self, columns: Iterable[str] | None = None, filter: pc.Expression | None = None
    ) -> pd.DataFrame:
        """Read decisions with column projection and an optional pyarrow filter expression.

        String columns come back as pandas categoricals: five million repeated condition ids as
        Python strings would cost hundreds of MB each.
        """
        names = self.decisions_dataset.schema.names
        wanted = list(columns) if columns is not None else names
        missing = [c for c in wanted if c not in names]
        if missing:
            raise KeyError(f"decisions have no column(s) {missing}; available: {names}")
        table = self.decisions_dataset.to_table(columns=wanted, filter=filter)
        return table.to_pandas(strings_to_categorical=True, self_destruct=True)

    @cached_property
    def decisions(self) -> pd.DataFrame:
        """Every decision column but the raw text (use ``read_decisions`` to pick columns)."""
        cols = [c for c in self.decisions_dataset.schema.names if c != "text"]
        return self.read_decisions(cols)

    def decisions_with_personas(
        self, columns: Iterable[str] | None = None, persona_columns: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """Decisions joined with persona attributes on (run_id, agent_id)."""
        frame = self.read_decisions(columns if columns is not None else METRIC_COLUMNS)
        personas = self.personas
        if persona_columns is not None:
            personas = personas[["run_id", "agent_id", *persona_columns]]
        clash = [c for c in personas.columns if c in frame.columns and c not in ("run_id", "agent_id")]
        personas = personas.drop(columns=clash)
        frame["run_id"] = frame["run_id"].astype(str)
        return frame.merge(personas, on=["run_id", "agent_id"], how="left")


def _seed_key(manifest: dict) -> tuple[str, str] | None:
    """(config hash, run seed) of a run; None when the manifest lacks the hash (nothing to compare).

    The config hash covers every field that changes decisions, the seed included, so two runs with
    the same key drew the same seeds for every (condition, replicate): the same data twice.
    """
    digest = manifest.get("config_hash")
    if not digest:
        return None
    seeds = manifest.get("seeds") or {}
    return str(digest), str(seeds.get("run", manifest.get("seed")))


def _keep_first(item: tuple[int, Path, str, dict]) -> tuple[int, str, int]:
    """Which of several repeats to keep: a completed run, then the earliest created, then path order."""
    index, _, _, manifest = item
    return (0 if manifest.get("status") == "completed" else 1, str(manifest.get("created_at") or ""), index)


def drop_repeated_runs(
    runs: list[tuple[Path, str, dict]],
) -> tuple[list[tuple[Path, str, dict]], dict[str, str]]:
    """Keep one run per (config hash, run seed); return the kept runs and {left out: kept}.

    Identical seeds are never counted as independent replicates: each left-out run is named in a
    warning, with the way to start a real replicate.
    """
    groups: dict[tuple[str, str], list[tuple[int, Path, str, dict]]] = {}
    for index, (run_dir, run_id, manifest) in enumerate(runs):
        key = _seed_key(manifest)
        if key is not None:
            groups.setdefault(key, []).append((index, run_dir, run_id, manifest))
    dropped: dict[str, str] = {}
    for (digest, seed), members in groups.items():
        if len(members) < 2:
            continue
        kept, *repeats = sorted(members, key=_keep_first)
        for _, _, run_id, _ in repeats:
            dropped[run_id] = kept[2]
        log.warning(
            "left out run(s) %s: same config (hash %s) and seed %s as run %s, so the same decisions again, "
            "not independent replicates; start a new replicate with `crowdlab run --fresh-seed`",
            ", ".join(r[2] for r in sorted(repeats)), digest[:12], seed, kept[2],
        )
    return [r for r in runs if r[1] not in dropped], dropped


def load(paths: PathLike | Sequence[PathLike]) -> RunData:
    """Open one run folder, an experiment folder of runs, or a list of them.

    Runs that repeat another run's config and seed are left out with a warning (see
    ``drop_repeated_runs``). Nothing large is read here; tables load on first access.
    """
    runs: list[tuple[Path, str, dict]] = []
    seen: set[str] = set()
    for run_dir in find_run_dirs(paths):
        manifest = _read_manifest(run_dir)
        run_id = str(manifest.get("run_id") or run_dir.name)
        if run_id in seen:
            raise RunFolderError(f"{run_dir}: run id {run_id!r} appears twice")
        seen.add(run_id)
        runs.append((run_dir, run_id, manifest))
    kept, dropped = drop_repeated_runs(runs)
    return RunData(run_dirs=[r[0] for r in kept], manifests={r[1]: r[2] for r in kept}, duplicates=dropped)


def as_run(run: "RunData | PathLike | Sequence[PathLike]") -> RunData:
    """Accept an opened run or anything ``load`` accepts."""
    return run if isinstance(run, RunData) else load(run)
