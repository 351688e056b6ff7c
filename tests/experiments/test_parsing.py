"""The tolerant answer parser on the answer shapes backends actually return."""

from __future__ import annotations

import math

import pytest

from crowdlab.experiments.scenarios.answer_parsing import parse_numbers

CASES = [
    ('{"guess": 33}', 33.0),
    ('{"reasoning": "avg 50, times 2/3 is 33.3", "guess": 22.5}', 22.5),
    ('```json\n{"guess": 41}\n```', 41.0),
    ("My guess is 33.", 33.0),
    ("33", 33.0),
    ("  17.25 ", 17.25),
    ("**42**", 42.0),
    ("Answer: 12", 12.0),
    ("I choose 19 because 2/3 of 30 is 20", 19.0),
    ('{"guess": "40"}', 40.0),
    ("guess = -5", -5.0),
    ("I would rather not say.", None),
    ("", None),
    ("maybe 20 or 30", None),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_parse(text: str, expected: float | None) -> None:
    value = parse_numbers([text])[0]
    if expected is None:
        assert math.isnan(value)
    else:
        assert value == pytest.approx(expected)


def test_parse_batch_keeps_order_and_length() -> None:
    texts = [c[0] for c in CASES] * 3
    values = parse_numbers(texts)
    assert values.shape == (len(texts),)
    assert values[3] == 33.0 and math.isnan(values[11])


def test_extract_reasoning_one_short_line() -> None:
    from crowdlab.experiments.scenarios.answer_parsing import extract_reasoning

    texts = ['{"reasoning":"If all pick 50,\\n  then 2/3 is \\"33\\".","guess":33}',
             "I think\n 22 is good", None, '{"guess":3}', "x" * 50, 'So {"guess": 3}']
    assert extract_reasoning(texts, 20).to_pylist() == [
        'If all pick 50, then...', "I think 22 is good", "", "", "x" * 20 + "...", "So"]
    assert extract_reasoning(texts[:1], 100).to_pylist() == ['If all pick 50, then 2/3 is "33".']
