"""The prompt audit trail: prompt_hash on every decision row, each distinct prompt and message
stored once per shard-round (prompts/, prompt_messages/), `crowdlab show` prints what an agent
saw and answered; older runs and prompt-free backends load with a null hash."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import yaml

from crowdlab.analysis import load
from crowdlab.analysis.prompts import show_decision
from crowdlab.experiments import run
from crowdlab.experiments.prompt_audit import prompt_tables
from crowdlab.parquet_io import write_table_atomic

REPO = Path(__file__).parents[2]
CROWDLAB = [sys.executable, "-m", "crowdlab.flows.cli"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def test_prompt_tables_store_each_message_and_prompt_once():
    system = {"role": "system", "content": "You play a game."}
    chats = [[system, {"role": "user", "content": "I am A."}], [system, {"role": "user", "content": "I am B."}],
             [system, {"role": "user", "content": "I am A."}], [{"role": "user", "content": "You play a game."}]]
    hashes, prompts, messages = prompt_tables(chats)
    hashes = hashes.to_pylist()
    assert hashes[0] == hashes[2] and len(set(hashes)) == 3
    assert prompts.num_rows == 3 and messages.num_rows == 4  # same text, other role: another message
    m_sys, m_a = sha("system\x00You play a game."), sha("user\x00I am A.")
    assert hashes[0] == sha(f"{m_sys}\x00{m_a}")
    table = prompts.to_pandas().set_index("prompt_hash")
    assert list(table.at[hashes[0], "message_hashes"]) == [m_sys, m_a]
    stored = dict(zip(messages["message_hash"].to_pylist(), messages["content"].to_pylist()))
    assert stored[m_sys] == "You play a game." and stored[m_a] == "I am A."
    none, empty_p, empty_m = prompt_tables([[], []])
    assert none.null_count == 2 and empty_p.num_rows == 0 and empty_m.num_rows == 0


def public_goods(n: int, backend: dict, shard_size: int) -> dict:
    cfg = yaml.safe_load((REPO / "experiments" / "configs" / "public_goods.yaml").read_text())
    cfg["population"].update(n=n, spec=str(REPO / cfg["population"]["spec"]))
    cfg.update(rounds=2, shard_size=shard_size, backend=backend)
    return cfg


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("audit")
    return run(public_goods(40, {"kind": "dummy", "latency_s": 0}, 20), run_id="a", runs_root=root).run_dir


def test_every_decision_names_a_stored_prompt(audited):
    dec = ds.dataset(audited / "decisions", format="parquet").to_table().to_pandas()
    assert dec["prompt_hash"].notna().all() and dec["prompt_hash"].str.len().eq(32).all()
    for path in sorted((audited / "decisions").rglob("shard-*.parquet")):
        rel = path.relative_to(audited / "decisions")
        shard = pq.read_table(path).to_pandas()
        prompts = pq.read_table(audited / "prompts" / rel).to_pandas()
        messages = pq.read_table(audited / "prompt_messages" / rel).to_pandas()
        assert set(prompts["prompt_hash"]) == set(shard["prompt_hash"]) and prompts["prompt_hash"].is_unique
        assert messages["message_hash"].is_unique and (messages["role"] == "system").sum() == 1  # shared once
        assert len(messages) == 1 + shard["prompt_hash"].nunique()
        for _, prompt in prompts.iterrows():
            parts = list(prompt["message_hashes"])
            assert prompt["prompt_hash"] == sha("\x00".join(parts))
            assert set(parts) <= set(messages["message_hash"])


def test_show_prints_what_the_agent_saw_and_answered(audited):
    personas = pd.read_parquet(audited / "personas" / "personas.parquet").set_index("agent_id")
    shown = show_decision(audited, 17, 2)
    assert [m["role"] for m in shown.messages] == ["system", "user"]
    assert personas.at[17, "description"] in shown.messages[1]["content"]
    assert "Round 2 of 2" in shown.messages[1]["content"] and "Round 1:" in shown.messages[1]["content"]
    row = ds.dataset(audited / "decisions", format="parquet").to_table().to_pandas().query("agent_id == 17 and round == 2")
    assert shown.text == row["text"].iloc[0] and shown.prompt_hash == row["prompt_hash"].iloc[0]
    out = subprocess.run([*CROWDLAB, "show", str(audited), "--agent", "17", "--round", "2"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--- system ---" in out.stdout and personas.at[17, "description"] in out.stdout
    assert row["text"].iloc[0] in out.stdout and "contribution" in out.stdout
    bad = subprocess.run([*CROWDLAB, "show", str(audited), "--agent", "999", "--round", "2"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: show: no decision of agent 999 in round 2"
    assert "Traceback" not in bad.stderr


def test_resume_rewrites_a_shard_and_its_prompts_identically(audited, tmp_path):
    import shutil

    copy = tmp_path / "public_goods" / "a"
    shutil.copytree(audited, copy)
    rel = Path("c000") / "replicate-0" / "round-2" / "shard-00001.parquet"
    before = pq.read_table(copy / "prompts" / rel)
    (copy / "decisions" / rel).unlink()  # a crash after the prompt files, before the decisions
    (copy / "rounds" / "c000" / "replicate-0" / "round-2.parquet").unlink()  # so round 2 is not settled
    cfg = public_goods(40, {"kind": "dummy", "latency_s": 0}, 20)
    run(cfg, run_id="a", runs_root=tmp_path)
    assert pq.read_table(copy / "prompts" / rel).equals(before)
    assert set(pq.read_table(copy / "decisions" / rel)["prompt_hash"].to_pylist()) == \
        set(before["prompt_hash"].to_pylist())


def test_prompt_free_backends_and_older_runs_load_with_a_null_hash(tmp_path):
    result = run(public_goods(8, {"kind": "formula"}, 8), run_id="f", runs_root=tmp_path)
    assert not (result.run_dir / "prompts").exists()
    dec = ds.dataset(result.run_dir / "decisions", format="parquet").to_table()
    assert dec["prompt_hash"].null_count == dec.num_rows
    assert "no prompt" in show_decision(result.run_dir, 3, 1).note
    # a version-2 run: no prompt_hash column at all
    for path in (result.run_dir / "decisions").rglob("*.parquet"):
        table = pq.read_table(path)
        write_table_atomic(table.drop_columns(["prompt_hash"]), path)
    data = load(result.run_dir)
    assert "prompt_hash" not in data.factor_columns
    shown = show_decision(data, 3, 2)
    assert "before the prompt audit trail" in shown.note and shown.answers["contribution"] is not None
