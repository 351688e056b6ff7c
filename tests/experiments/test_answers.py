"""Typed answers: schema fragments, tolerant parsing, error causes and Arrow types per type."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from crowdlab.experiments.answers import (
    ANSWER_TYPES, ChoiceAnswer, IntegerAnswer, LikertAnswer, LinearScaleAnswer, MultiChoiceAnswer, NumberAnswer,
    RankingAnswer, ReasoningAnswer, TextAnswer, answer_arrow_fields, answer_field, answer_schema, example_fields,
    parse_answers,
)
from crowdlab.experiments.scenarios.answer_parsing import parse_numbers


def parse_one(field, texts: list[str], name: str = "x"):  # type: ignore[no-untyped-def]
    out = parse_answers(texts, {name: field})
    return out.columns[name].to_pylist(), list(out.causes[name])


def test_every_type_has_an_example_schema_and_arrow_type() -> None:
    fields = example_fields()
    assert set(fields) == {t.type_name for t in ANSWER_TYPES}
    schema = answer_schema(fields)
    assert schema["additionalProperties"] is False and schema["required"] == list(fields)
    json.dumps(schema, separators=(",", ":"))  # plain JSON
    arrow = {f.name: f.type for f in answer_arrow_fields(fields)}
    assert arrow["answer_choice"] == pa.dictionary(pa.int32(), pa.string())
    assert arrow["answer_number"] == pa.float64() and arrow["answer_integer"] == pa.int64()
    assert arrow["answer_likert"] == pa.int32() and arrow["answer_ranking"] == pa.list_(pa.string())
    assert arrow["answer_errors"] == pa.map_(pa.string(), pa.string())


def test_a_full_json_answer_parses_into_typed_columns() -> None:
    fields = example_fields()
    answer = {"number": 33.5, "integer": 4, "choice": "Accept", "multi_choice": ["bus", "bike"],
              "likert": 4, "linear_scale": 7, "ranking": ["ban", "tax", "subsidy"], "text": 'say "hi"',
              "reasoning": "line\nbreak"}
    out = parse_answers([json.dumps(answer), "no idea"], fields)
    row = {k: v.to_pylist()[0] for k, v in out.columns.items()}
    assert row == dict(answer, choice="accept")
    assert out.valid.tolist() == [True, False]
    assert out.error.tolist() == [None, "unparseable"]
    table = pa.table({"e": out.errors_column()})
    assert table["e"].to_pylist()[0] is None
    # the optional reasoning left out is not an error; every required field is
    assert dict(table["e"].to_pylist()[1]) == {k: "unparseable" for k in fields if k != "reasoning"}


def test_number_bounds_and_integers() -> None:
    assert parse_one(NumberAnswer(low=0, high=100), ['{"x": 101}', '{"x": -1}', "x = 5", '{"x": "7"}'])[1] == \
        ["out_of_range", "out_of_range", None, None]
    values, causes = parse_one(IntegerAnswer(low=0, high=20), ['{"x": 3.5}', '{"x": 3.0}', '{"x": 25}'])
    assert values == [None, 3, None] and causes == ["not_integer", None, "out_of_range"]
    assert IntegerAnswer(low=0, high=20).json_schema() == {"type": "integer", "minimum": 0, "maximum": 20}


def test_lone_number_field_reads_like_the_beauty_contest_parser() -> None:
    texts = ['{"guess": 33}', "My guess is 21.5.", "**40**", "I pick 10 or 20", "```json\n{\"guess\": 7}\n```",
             "none", "guess: 2e1", "", '{"reasoning": "2/3 of 50 is 33", "guess": 22}']
    fields = {"reasoning": ReasoningAnswer(), "guess": NumberAnswer(low=0, high=100)}
    parsed = parse_answers(texts, fields).columns["guess"].to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(parsed, parse_numbers(texts))


def test_choice_is_case_insensitive_and_names_unknown_options() -> None:
    values, causes = parse_one(ChoiceAnswer(options=["accept", "reject"]),
                               ['{"x": "ACCEPT"}', "reject.", '{"x": "maybe"}', ""])
    assert values == ["accept", "reject", None, None]
    assert causes == [None, None, "unknown_option", "unknown_option"]


def test_multi_choice_counts_duplicates_and_unknowns() -> None:
    field = MultiChoiceAnswer(options=["bus", "bike", "car"], min_selections=1, max_selections=2)
    values, causes = parse_one(field, ['{"x": ["bus", "Bike"]}', '{"x": []}', '{"x": ["bus", "bus"]}',
                                       '{"x": ["tram"]}', '{"x": ["bus", "bike", "car"]}', "bus"])
    assert values[0] == ["bus", "bike"]
    assert causes == [None, "too_few", "duplicate_option", "unknown_option", "too_many", "unparseable"]


def test_likert_accepts_points_or_labels() -> None:
    field = LikertAnswer(labels=["disagree", "neutral", "agree"])
    values, causes = parse_one(field, ['{"x": 3}', '{"x": "Agree"}', "neutral", '{"x": 4}', '{"x": "meh"}'])
    assert values == [3, 3, 2, None, None]
    assert causes == [None, None, None, "out_of_range", "unparseable"]
    scale = LinearScaleAnswer(low=0, high=10, end_labels={0: "never", 10: "always"})
    assert parse_one(scale, ['{"x": 10}', '{"x": "never"}', '{"x": 11}'])[0] == [10, 0, None]


def test_ranking_must_rank_every_option_once() -> None:
    field = RankingAnswer(options=["a", "b", "c"])
    values, causes = parse_one(field, ['{"x": ["c", "a", "b"]}', '{"x": ["a", "b"]}', '{"x": ["a", "a", "b"]}'])
    assert values == [["c", "a", "b"], None, None]
    assert causes == [None, "incomplete_ranking", "duplicate_option"]
    assert parse_one(RankingAnswer(options=["a", "b", "c"], top_k=1), ['{"x": ["b"]}'])[0] == [["b"]]


def test_text_length_cap() -> None:
    values, causes = parse_one(TextAnswer(max_chars=5), ['{"x": "short"}', '{"x": "too long"}', "plain"])
    assert values == ["short", None, "plain"] and causes == [None, "too_long", None]


@pytest.mark.parametrize(("data", "needle"), [
    ({"type": "essay"}, "does not match any of the expected tags"),
    ({"type": "choice", "options": ["Yes", "yes"]}, "duplicate option label"),
    ({"type": "number", "low": 5, "high": 5}, "low (5) must be below high (5)"),
    ({"type": "linear_scale", "low": 3, "high": 1}, "low (3) must be below high (1)"),
    ({"type": "ranking", "options": ["a", "b"], "top_k": 3}, "top_k"),
    ({"type": "multi_choice", "options": ["a"], "min_selections": 2}, "min_selections"),
])
def test_bad_declarations_fail_when_declared(data: dict, needle: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(needle)):
        answer_field(data)


def test_parsing_is_vectorised_over_a_large_batch() -> None:
    fields = {"c": ChoiceAnswer(options=["x", "y"]), "n": NumberAnswer(low=0, high=1)}
    texts = [f'{{"c": "{"xy"[i % 2]}", "n": {i / 100_000}}}' for i in range(100_000)]
    out = parse_answers(texts, fields)
    assert out.valid.all()
    assert out.columns["c"].indices.to_numpy().sum() == 50_000


def test_list_items_may_hold_commas_when_quoted() -> None:
    field = MultiChoiceAnswer(options=["red, white", "blue"])
    values, causes = parse_one(field, ['{"x": ["red, white", "blue"]}', "{\"x\": [blue]}"])
    assert values == [["red, white", "blue"], ["blue"]] and causes == [None, None]
