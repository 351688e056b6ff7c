"""Interviews (scenario.interview): follow-up questions after a round, with the agent's history in
the prompt, stored per shard under interviews/, resumable, seeded and shard-invariant samples,
and bad input named before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from crowdlab.experiments import run
from crowdlab.experiments.config import load_config
from crowdlab.experiments.errors import ConfigError
from crowdlab.experiments.interviews import interview_path
from crowdlab.experiments.prepare import preflight
from tests.experiments.conftest import with_field

REPO = Path(__file__).parents[2]
CONFIG = REPO / "experiments" / "configs" / "public_goods_interview.yaml"


def config(personas: Path, sample: Any = 1.0, shard_size: int = 250, **interview: Any) -> dict[str, Any]:
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg.update({"population": {"personas": str(personas)}, "rounds": 3, "shard_size": shard_size, "seed": 5})
    cfg["population"]["n"] = None
    del cfg["population"]["n"]
    cfg["scenario"]["prompts"]["user"] = "Your education: {{ persona.education }}."
    # a prompt-reading stand-in that answers JSON: contributions play, interviews get numbers
    cfg["backend"] = {"kind": "simulated_gpu", "render_prompts": True, "json_answers": True,
                      "fixed_latency_s": 0, "throughput": 1e9}
    cfg["scenario"]["interview"] = {"after_round": "last", "sample": sample, "questions": [
        {"name": "why", "prompt": "Round {{ round }} is over. You gave {{ last.own.contribution }} last. Why?",
         "fields": {"explanation": {"type": "text", "max_chars": 200, "required": False},
                    "confidence": {"type": "number", "low": 0, "high": 100}}}], **interview}
    return cfg


def interviews(run_dir: Path):  # type: ignore[no-untyped-def]
    return ds.dataset(run_dir / "interviews", format="parquet").to_table().sort_by("agent_id")


def messages(run_dir: Path) -> dict[str, str]:
    prompts = ds.dataset(run_dir / "interview_prompts", format="parquet").to_table().to_pylist()
    msgs = {m["message_hash"]: m["content"] for m in
            ds.dataset(run_dir / "interview_prompt_messages", format="parquet").to_table().to_pylist()}
    return {p["prompt_hash"]: msgs[p["message_hashes"][-1]] for p in prompts}  # the user message


def test_every_agent_interviewed_once_with_its_history(personas_path: Path, tmp_path: Path) -> None:
    result = run(config(personas_path), run_id="r", runs_root=tmp_path)
    t = interviews(result.run_dir)
    n = pq.read_metadata(personas_path).num_rows
    assert t.num_rows == n and len(set(t["agent_id"].to_pylist())) == n
    assert t["valid"].to_pylist() == [True] * n  # the stand-in fills the last field
    assert all(0 <= x <= 100 for x in t["answer_confidence"].to_pylist())
    assert set(t["after_round"].to_pylist()) == {3}
    decisions = ds.dataset(result.run_dir / "decisions", format="parquet").to_table().to_pylist()
    gave = {(d["agent_id"], d["round"]): d["answer_contribution"] for d in decisions}
    chats = messages(result.run_dir)
    for row in t.slice(0, 20).to_pylist():
        user = chats[row["prompt_hash"]]
        for k in (1, 2, 3):
            assert f"Round {k}: you contributed {gave[(row['agent_id'], k)]};" in user
        assert f"You gave {gave[(row['agent_id'], 3)]} last. Why?" in user
        assert '"explanation": <text' in user
    assert result.run_dir.joinpath("manifest.json").read_text().count('"interviews": ') == 1


def test_sample_is_seeded_and_shard_invariant(personas_path: Path, tmp_path: Path) -> None:
    a = interviews(run(config(personas_path, {"share": 0.2}, shard_size=250), run_id="a", runs_root=tmp_path).run_dir)
    b = interviews(run(config(personas_path, {"share": 0.2}, shard_size=70), run_id="b", runs_root=tmp_path).run_dir)
    assert 60 < a.num_rows < 180
    assert a["agent_id"].to_pylist() == b["agent_id"].to_pylist()
    assert a["seed"].to_pylist() == b["seed"].to_pylist()
    assert a["text"].to_pylist() == b["text"].to_pylist()
    c = interviews(run(config(personas_path, {"n": 25}, shard_size=70), run_id="c", runs_root=tmp_path).run_dir)
    d = interviews(run(config(personas_path, {"n": 25}, shard_size=600), run_id="d", runs_root=tmp_path).run_dir)
    assert c.num_rows == 25 and c["agent_id"].to_pylist() == d["agent_id"].to_pylist()


def test_a_deleted_interview_file_is_redone_alone(personas_path: Path, tmp_path: Path) -> None:
    cfg = config(personas_path, shard_size=200)
    result = run(cfg, run_id="r", runs_root=tmp_path)
    before = interviews(result.run_dir)
    files = {s: interview_path(result.run_dir, "c000", 0, s) for s in range(3)}
    stamps = {s: f.stat().st_mtime_ns for s, f in files.items()}
    files[1].unlink()
    again = run(cfg, run_id="r", runs_root=tmp_path)
    after = interviews(again.run_dir)
    assert after.equals(before)
    assert files[0].stat().st_mtime_ns == stamps[0] and files[2].stat().st_mtime_ns == stamps[2]
    assert files[1].is_file()


def test_interview_after_a_chosen_round_sees_only_rounds_up_to_it(personas_path: Path, tmp_path: Path) -> None:
    result = run(config(personas_path, 0.1, after_round=2), run_id="r", runs_root=tmp_path)
    t = interviews(result.run_dir)
    assert set(t["after_round"].to_pylist()) == {2}
    for user in messages(result.run_dir).values():
        assert "Round 2: you contributed" in user and "Round 3:" not in user


def test_a_rule_based_backend_is_not_interviewed(personas_path: Path, tmp_path: Path) -> None:
    cfg = config(personas_path, {"n": 10})
    cfg["backend"] = {"kind": "formula"}
    t = interviews(run(cfg, run_id="r", runs_root=tmp_path).run_dir)
    assert t.num_rows == 10 and set(t["error"].to_pylist()) == {"no_prompts"}
    assert not any(t["valid"].to_pylist())


IV = "scenario.interview"
BAD = [
    (f"{IV}.questions.0.fields.confidence", {"type": "essay"}, f"{IV}.questions.0.fields.confidence.type"),
    (f"{IV}.after_round", 4, f"{IV}.after_round"),
    (f"{IV}.after_round", 0, f"{IV}.after_round"),
    (f"{IV}.after_round", "first", f"{IV}.after_round"),
    (f"{IV}.sample", {"share": 1.5}, f"{IV}.sample.share"),
    (f"{IV}.sample", {"share": 0}, f"{IV}.sample.share"),
    (f"{IV}.sample", 0.0, f"{IV}.sample"),
    (f"{IV}.sample", {"n": 0}, f"{IV}.sample.n"),
    (f"{IV}.questions.0.prompt", "{{ ''.__class__ }}", f"{IV}.questions.0.prompt"),
    (f"{IV}.questions.0.prompt", "{{ answer }}", f"{IV}.questions.0.prompt"),
]


@pytest.mark.parametrize(("where", "value", "field"), BAD)
def test_bad_interview_input_names_the_field(personas_path: Path, tmp_path: Path, where: str, value: Any,
                                             field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(with_field(config(personas_path), where, value), sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == field, str(info.value)


def test_interview_prompt_naming_a_missing_column_or_name_fails_in_preflight(personas_path: Path) -> None:
    cfg = with_field(config(personas_path), f"{IV}.questions.0.prompt", "You earn {{ persona.salary }}.")
    with pytest.raises(ConfigError) as info:
        preflight(cfg)
    assert info.value.field == f"{IV}.questions.0.prompt" and "'salary'" in str(info.value)
    cfg = with_field(config(personas_path), f"{IV}.questions.0.prompt", "{{ last.own.contribuion }}")
    with pytest.raises(ConfigError) as info:
        preflight(cfg)
    assert info.value.field == f"{IV}.questions.0.prompt" and "contribuion" in str(info.value)
    preflight(config(personas_path))
    preflight(load_config(CONFIG))  # the shipped config


def test_report_shows_interviews(personas_path: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from crowdlab.analysis.interviews import interview_tables
    from crowdlab.analysis.report import write_report

    result = run(config(personas_path, {"n": 30}), run_id="r", runs_root=tmp_path)
    tables = interview_tables(result.run_dir)
    assert tables is not None
    assert tables["counts"][["asked", "valid"]].values.tolist() == [[30, 30]]
    conf = tables["fields"].set_index("field").loc["confidence"]
    assert conf["n"] == 30 and conf["summary"].startswith("mean ")
    assert tables["fields"].set_index("field").loc["explanation", "n"] == 0  # the stand-in writes no text
    page = write_report(result.run_dir).read_text()
    assert 'id="interviews"' in page and "mean length" not in page and "confidence" in page
    # a text answer (what an LLM would write) shows as an example
    import pyarrow as pa
    f = interview_path(result.run_dir, "c000", 0, 0)
    t = pq.read_table(f)
    i = t.schema.get_field_index("answer_explanation")
    t = t.set_column(i, t.schema.field(i), pa.array(["I matched the others."] * t.num_rows))
    pq.write_table(t, f)
    assert interview_tables(result.run_dir)["examples"]["answer"].tolist() == ["I matched the others."] * 3
    assert "I matched the others." in write_report(result.run_dir).read_text()
    out = subprocess.run([sys.executable, "-m", "crowdlab.flows.cli", "report", str(result.run_dir)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "c000 after round 3: 30 asked, 30 valid" in out.stdout
    assert "confidence (number, n=30): mean" in out.stdout


@pytest.mark.slow
@pytest.mark.prefect
def test_interviews_through_the_prefect_flow(prefect_server: dict[str, str], personas_path: Path,
                                             tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "iv.yaml"
    path.write_text(yaml.safe_dump(config(personas_path, {"n": 40}, shard_size=200), sort_keys=False))
    runs = tmp_path / "runs"
    args = [sys.executable, "-m", "crowdlab.flows.cli", "run", str(path), "--run-id", "pf", "--runs-root", str(runs)]
    out = subprocess.run(args, env=prefect_server, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    run_dir = runs / "public_goods_interview" / "pf"
    t = interviews(run_dir)
    assert t.num_rows == 40 and len(set(t["agent_id"].to_pylist())) == 40 and all(t["valid"].to_pylist())
    assert len(list((run_dir / "interviews").rglob("*.parquet"))) == 3
