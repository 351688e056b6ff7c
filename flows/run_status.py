"""How far an existing run got, read from its folder: what the CLI says before resuming.

Counted the way the runner counts progress: a settled round counts all its shards, an unsettled
one the shard files already written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crowdlab.experiments.storage import MANIFEST, config_hash, decision_path, read_manifest, round_part_path, run_path


def shards_done(run_dir: Path) -> tuple[int, int]:
    """(shards done, shards in the run) of a prepared run folder."""
    manifest = read_manifest(run_dir)
    n_shards, rounds = int(manifest["n_shards"]), int(manifest["rounds"])
    done = total = 0
    for cond in manifest["conditions"]:
        cid = cond["condition_id"]
        for rep in range(int(manifest["replicates"])):
            for k in range(1, rounds + 1):
                total += n_shards
                if round_part_path(run_dir, cid, rep, k).is_file():
                    done += n_shards
                else:
                    done += sum(decision_path(run_dir, cid, rep, k, s).is_file() for s in range(n_shards))
    return done, total


def resume_message(config: Any, run_id: str | None, runs_root: str | Path) -> str | None:
    """"nothing to do: 24/24 shards done" when ``run_id`` exists with the same config and is
    complete, "resuming: 10/24 shards done" when part of it is; None for a new run or one that
    ``--overwrite`` replaces. ``config``: a validated ``ExperimentConfig``."""
    if run_id is None:
        return None
    run_dir = run_path(runs_root, config.experiment, run_id)
    if not (run_dir / MANIFEST).is_file():
        return None
    try:
        manifest = read_manifest(run_dir)
        if manifest.get("config_hash") != config_hash(config.model_dump(mode="json")) or "n_shards" not in manifest:
            return None
        done, total = shards_done(run_dir)
    except (OSError, ValueError, KeyError):
        return None
    if done >= total:
        return f"nothing to do: {done}/{total} shards done"
    return f"resuming: {done}/{total} shards done" if done else None
