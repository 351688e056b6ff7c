"""Feasibility rules: enforced on every row, shard-invariant, marginals as the spec says where allowed."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from crowdlab.personas import SpecError, sample, sample_rows
from crowdlab.personas.constraints import violation_mask

RULES = [
    {"name": "young_not_retired", "if": {"age": {"lt": 22}}, "then": {"occupation": {"not_in": ["retired", "professor"]}, "education": {"not_in": ["doctorate"]}}},
    {"name": "professor_needs_doctorate", "if": {"occupation": {"in": ["professor"]}}, "then": {"education": {"in": ["doctorate"]}}},
    {"name": "retired_are_older", "if": {"occupation": {"in": ["retired"]}}, "then": {"age": {"ge": 55}}},
]


@pytest.mark.slow
def test_no_violating_row_in_a_million_and_free_marginals_hold(make_spec) -> None:
    spec = make_spec(constraints=RULES)
    table = sample(spec, 1_000_000, seed=5, shards=3)
    mask, counts = violation_mask(spec, table)
    assert not mask.any() and counts.tolist() == [0, 0, 0]
    # sex takes no part in any rule: its marginal is untouched
    male = pc.sum(pc.equal(table["sex"], "male")).as_py() / table.num_rows
    assert abs(male - 0.5) < 0.003
    # rejection conditions the joint on the feasible set: occupations stay in their target ratios
    # among the rows where no rule can bite (age >= 55, education doctorate)
    ok_rows = table.filter(pc.and_(pc.greater_equal(table["age"], 55), pc.equal(table["education"], "doctorate")))
    shares = {o: pc.sum(pc.equal(ok_rows["occupation"], o)).as_py() / ok_rows.num_rows for o in ("student", "nurse", "professor", "retired")}
    for occupation, target in {"student": 0.2, "nurse": 0.3, "professor": 0.1, "retired": 0.4}.items():
        assert abs(shares[occupation] - target) < 0.01, (occupation, shares)
    # professors exist and all hold doctorates
    profs = table.filter(pc.equal(table["occupation"], "professor"))
    assert profs.num_rows > 10_000 and pc.all(pc.equal(profs["education"], "doctorate")).as_py()


def test_shard_invariant_and_reproducible(make_spec) -> None:
    spec = make_spec(constraints=RULES)
    whole = sample(spec, 70_000, seed=9)
    assert whole.equals(sample(spec, 70_000, seed=9, shards=7))
    assert sample_rows(spec, 65_000, 66_000, 9, 70_000).equals(whole.slice(65_000, 1000))
    assert not sample(spec, 70_000, seed=10).equals(whole)


def test_specs_without_constraints_sample_as_before(make_spec) -> None:
    plain = make_spec()
    free = make_spec(constraints=[{"name": "never", "if": {"age": {"gt": 1000}}, "then": {"education": {"in": ["doctorate"]}}}])
    assert sample(plain, 5000, 3).equals(sample(free, 5000, 3))


@pytest.mark.parametrize(
    "rule, field, problem",
    [
        ({"name": "x", "then": {"height": {"gt": 1}}}, "constraints[0] (x).then.height", "no attribute named 'height'"),
        ({"name": "x", "if": {"job": {"in": ["a"]}}, "then": {"age": {"gt": 1}}}, "constraints[0] (x).if.job", "no attribute named 'job'"),
        ({"name": "x", "then": {"occupation": {"in": ["astronaut"]}}}, "constraints[0] (x).then.occupation", "never takes the value 'astronaut'"),
        ({"name": "x", "then": {"age": {"in": ["3"]}}}, "constraints[0] (x).then.age", "numeric"),
        ({"name": "x", "then": {"occupation": {"lt": 3}}}, "constraints[0] (x).then.occupation", "categorical"),
        ({"name": "x", "then": {"city": {"in": ["a"]}}}, "constraints[0] (x).then.city", "identity attribute"),
        ({"name": "x", "then": {"age": {"gt": 50, "lt": 40}}}, "constraints[0] (x).then.age", "no value"),
        ({"name": "x", "then": {"education": {"in": ["doctorate"], "not_in": ["doctorate"]}}}, "constraints[0] (x).then.education", "no value"),
    ],
)
def test_bad_constraints_name_the_field(make_spec, rule: dict, field: str, problem: str) -> None:
    with pytest.raises(SpecError) as info:
        make_spec(constraints=[rule])
    assert info.value.field.startswith(field.split(".")[0]) and field in str(info.value) and problem in str(info.value)


def test_contradictory_constraints_fail_naming_a_constraint(make_spec) -> None:
    rules = [
        {"name": "old_professors", "if": {"occupation": {"in": ["professor"]}}, "then": {"age": {"ge": 60}}},
        {"name": "young_professors", "if": {"occupation": {"in": ["professor"]}}, "then": {"age": {"le": 30}}},
        {"name": "everyone_professor", "then": {"occupation": {"in": ["professor"]}}},
    ]
    spec = make_spec(constraints=rules, max_passes=5)
    with pytest.raises(SpecError, match=r"^constraints\[\d\] \(\w+_professors?\): \d+ of 1000 rows .*after 5 resampling passes") as info:
        sample(spec, 1000, seed=1)
    named = [name for name in ("old_professors", "young_professors", "everyone_professor") if name in str(info.value)]
    assert len(named) >= 2  # the clash is between rules: the message names more than one


def test_rare_feasible_set_needs_passes_and_says_so(make_spec) -> None:
    rule = [{"name": "only_old_doctors", "then": {"age": {"ge": 70}, "education": {"in": ["doctorate"]}}}]
    with pytest.raises(SpecError, match=r"only_old_doctors.*after 2 resampling passes"):
        sample(make_spec(constraints=rule, max_passes=2), 2000, seed=1)
    table = sample(make_spec(constraints=rule, max_passes=800), 2000, seed=1)
    assert pc.min(table["age"]).as_py() >= 70
    assert np.unique(table["education"].to_numpy(zero_copy_only=False)).tolist() == ["doctorate"]


def test_constraints_round_trip_through_yaml_and_keep_the_hash(demo_spec) -> None:
    from crowdlab.personas import parse_spec

    again = parse_spec(demo_spec.to_json())
    assert again.spec_hash == demo_spec.spec_hash
    assert again.constraints[0].if_["age"].lt == 22
