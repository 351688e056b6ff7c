"""The gate's tolerant comparison on hand-written answers, and its use on echo-written texts."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from crowdlab.personas import SpecError, sample
from crowdlab.personas.backgrounds.spec import GateSpec
from crowdlab.personas.backgrounds.write import add_backgrounds, contradiction_rates, resolve_backend
from crowdlab.personas.backgrounds.gate import compare, parse_answers

FIELDS = ["age", "occupation", "education", "city"]
GATE = GateSpec(tolerance={"age": 1}, synonyms={"education": {"doctorate": ["PhD", "doctoral degree"], "master's degree": ["MSc"]}})
ROWS = pa.table({
    "age": [34, 34, 34, 61, 22, 40],
    "occupation": ["software engineer", "nurse", "nurse", "retired", "student", "teacher"],
    "education": ["master's degree", "doctorate", "doctorate", "high school", "high school", "master's degree"],
    "city": ["New York", "Lyon", "Lyon", "Berlin", "Köln", "Paris"],
})


def answers(*rows: dict) -> list[str]:
    return [json.dumps(r) for r in rows]


def test_tolerant_comparison_of_hand_written_answers() -> None:
    texts = answers(
        {"age": 35, "occupation": "a Software  Engineer", "education": "Masters degree", "city": "new york"},  # all fine
        {"age": "34 years", "occupation": "Nurse", "education": "a PhD in biology", "city": "Lyon."},  # synonym + units
        {"age": 36, "occupation": "nurse", "education": "doctorate", "city": "Lyon"},  # age off by 2
        {"age": 61, "occupation": "banker", "education": "high school", "city": "Munich"},  # two wrong
        {"age": 22, "occupation": "student", "education": "high-school", "city": "köln"},  # punctuation, case
    ) + ["this is not json"]
    parsed_answers, parsed = parse_answers(texts, FIELDS, {"age"})
    ok, why = compare(ROWS, parsed_answers, parsed, FIELDS, {"age"}, GATE)
    assert ok.tolist() == [True, True, False, False, True, False]
    assert why == [None, None, "age", "occupation,city", None, "unreadable"]


def test_relative_tolerance_for_numbers_without_their_own() -> None:
    rows = pa.table({"income": [50_000, 50_000, 50_000]})
    parsed_answers, parsed = parse_answers(answers({"income": 54_000}, {"income": 56_000}, {"income": "50,000"}), ["income"], {"income"})
    ok, why = compare(rows, parsed_answers, parsed, ["income"], {"income"}, GateSpec())
    assert ok.tolist() == [True, False, True] and why[1] == "income"


@pytest.fixture(scope="module")
def personas(demo_spec):
    return sample(demo_spec, 3000, seed=4)


def test_contradictions_are_regenerated_then_flagged_never_dropped(demo_spec, personas) -> None:
    backend = resolve_backend(demo_spec, {"kind": "echo", "corrupt_rate": 0.4, "empty_rate": 0.05})
    out = add_backgrounds(personas, demo_spec, 4, backend)
    assert out.num_rows == personas.num_rows and out["agent_id"].equals(personas["agent_id"])
    assert out.select(personas.column_names).equals(personas)
    rates = contradiction_rates(out)
    # first try: 40% corrupt + 5% empty; three tries leave about 0.45**3 = 9%
    assert 0.40 < rates["before_regeneration"] < 0.50
    assert 0.06 < rates["after_regeneration"] < 0.12
    consistent = out["background_consistent"].to_numpy(zero_copy_only=False)
    tries = out["background_tries"].to_numpy()
    mismatch = out["background_mismatch"].to_pylist()
    assert set(tries.tolist()) == {1, 2, 3}
    assert all((m is None) == c for m, c in zip(mismatch, consistent))
    assert (tries[~consistent] == 3).all()
    # a corrupted text says "unknown" for age: the gate names the field
    assert "age" in set(mismatch)
    # texts are kept even when flagged; empty ones only when every try came back empty
    texts = out["background"].to_pylist()
    flagged_empty = [t for t, m in zip(texts, mismatch) if m == "empty"]
    assert all(t == "" for t in flagged_empty)
    assert all(t for t, c in zip(texts, consistent) if c)


def test_backend_that_returns_only_empty_text_flags_every_row(demo_spec, personas) -> None:
    rows = personas.slice(0, 50)
    out = add_backgrounds(rows, demo_spec, 4, resolve_backend(demo_spec, {"kind": "echo", "empty_rate": 1.0}))
    assert out.num_rows == 50
    assert out["background_mismatch"].to_pylist() == ["empty"] * 50
    assert not any(out["background_consistent"].to_pylist())
    assert out["background_tries"].to_pylist() == [3] * 50


def test_one_persona_alone_gets_its_text_from_the_full_run(demo_spec, personas) -> None:
    backend = resolve_backend(demo_spec, {"kind": "echo", "corrupt_rate": 0.5})
    full = add_backgrounds(personas.slice(0, 400), demo_spec, 4, backend)
    for k in (7, 123, 399):
        alone = add_backgrounds(personas.slice(k, 1), demo_spec, 4, backend)
        assert alone.to_pylist() == full.slice(k, 1).to_pylist()
    other_seed = add_backgrounds(personas.slice(0, 400), demo_spec, 5, backend)
    assert not np.array_equal(other_seed["background_tries"].to_numpy(), full["background_tries"].to_numpy())


def test_persona_table_without_needed_columns_fails_before_work(demo_spec, personas) -> None:
    with pytest.raises(SpecError, match=r"lacks the columns \['occupation'\]"):
        add_backgrounds(personas.drop_columns(["occupation"]), demo_spec, 4, resolve_backend(demo_spec))


def test_background_spec_errors_name_the_field(make_spec) -> None:
    with pytest.raises(SpecError, match=r"background.mention\[1\]: no attribute named 'income'"):
        make_spec(background={"mention": ["age", "income"]})
    with pytest.raises(SpecError, match=r"background.gate.synonyms\[education\]\[phd\]"):
        make_spec(background={"mention": ["age"], "gate": {"synonyms": {"education": {"phd": ["x"]}}}})
    with pytest.raises(SpecError, match="background.backend: no backend"):
        resolve_backend(make_spec(background={"mention": ["age"]}))
    with pytest.raises(SpecError, match="background.backend: invalid backend config"):
        resolve_backend(make_spec(background={"mention": ["age"], "backend": {"kind": "vllm"}}))
