"""`crowdlab run --fresh-seed` starts an independent replicate (the deployment's fresh_seed, on the CLI)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml

from crowdlab.analysis import load

REPO_ROOT = Path(__file__).resolve().parents[2]
CROWDLAB = [sys.executable, "-m", "crowdlab.flows.cli"]


def _config(tmp_path: Path, personas: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": "fresh", "population": {"personas": str(personas)},
        "scenario": {"kind": "beauty_contest", "p": "2/3"}, "backend": {"kind": "behavioral"},
        "rounds": 2, "shard_size": 600, "seed": 42,
    }))
    return path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(CROWDLAB + ["run", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.mark.slow
def test_fresh_seed_gives_new_replicates_and_plain_reruns_are_not_pooled(tmp_path, personas_path):
    config, runs = _config(tmp_path, personas_path), tmp_path / "runs"
    common = [str(config), "--runs-root", str(runs), "--no-prefect"]
    _run([*common, "--run-id", "plain-1"], tmp_path)
    _run([*common, "--run-id", "plain-2"], tmp_path)  # same config, same seed: the same decisions again
    _run([*common, "--run-id", "rep-a", "--fresh-seed"], tmp_path)
    out = _run([*common, "--fresh-seed"], tmp_path).stdout
    auto = re.search(r"replicate-\d{8}T\d{6}Z-[0-9a-f]{6}", out.replace("\n", ""))
    assert auto, out
    seeds = {d.name: _manifest(d)["seeds"]["run"] for d in (runs / "fresh").iterdir()}
    assert seeds["plain-1"] == seeds["plain-2"] == 42
    assert seeds["rep-a"] == zlib.crc32(b"rep-a") and seeds[auto.group()] == zlib.crc32(auto.group().encode())
    run = load(runs / "fresh")
    assert run.duplicates == {"plain-2": "plain-1"}
    assert sorted(run.run_ids) == sorted(["plain-1", "rep-a", auto.group()])
    first_round = run.rounds.query("group == -1 and round == 1").set_index("run_id")["mean"]
    assert first_round.nunique() == 3  # three independent replicates
    # the same --run-id with --fresh-seed resumes (same derived seed), nothing is duplicated
    again = _run([*common, "--run-id", "rep-a", "--fresh-seed"], tmp_path)
    assert _manifest(runs / "fresh" / "rep-a")["attempts"] == 2, again.stdout


def test_fresh_seed_keeps_an_explicit_seed_override():
    from crowdlab.experiments.config import fresh_replicate

    run_id, overrides = fresh_replicate(None, {"seed": 5, "rounds": 2})
    assert run_id.startswith("replicate-") and overrides == {"seed": 5, "rounds": 2}
    assert fresh_replicate("x", None) == ("x", {"seed": zlib.crc32(b"x")})
    # replicates started in the same second (overlapping scheduled runs) get their own ids and seeds
    ids = {fresh_replicate()[0] for _ in range(20)}
    assert len(ids) == 20
