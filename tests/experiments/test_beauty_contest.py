"""The game's arithmetic against hand-computed cases, schema/regex, prompts."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from crowdlab.experiments.scenarios import BeautyContest, BeautyContestParams, History
from crowdlab.experiments.scenarios.beauty_contest import capped_chars


def decisions(values: list[float | None], groups: list[int] | None = None) -> pa.Table:
    n = len(values)
    v = np.array([np.nan if x is None else x for x in values])
    return pa.table({
        "agent_id": pa.array(np.arange(n, dtype=np.int64)),
        "group": pa.array(np.array(groups or [0] * n, dtype=np.int32)),
        "value": pa.array(v, from_pandas=True),
        "valid": pa.array(np.isfinite(v) & (v >= 0) & (v <= 100)),
    })


def rows(table: pa.Table) -> dict[int, dict]:
    return {r["group"]: r for r in table.to_pylist()}


def test_target_and_single_winner() -> None:
    game = BeautyContest(BeautyContestParams(p=2 / 3))
    out = rows(game.settle(decisions([20, 40, 60])))  # mean 40, target 26.67
    assert out[0]["mean"] == pytest.approx(40)
    assert out[0]["target"] == pytest.approx(80 / 3)
    assert out[0]["winning_value"] == 20
    assert out[0]["winner_ids"] == [0]
    assert out[-1]["winner_ids"] == [0]  # one group: the pooled row repeats it


def test_ties_share_the_win() -> None:
    game = BeautyContest(BeautyContestParams(p=0.5))
    out = rows(game.settle(decisions([10, 30, 20, 20])))  # mean 20, target 10
    # 10 is at distance 0; nothing else ties. Now make a symmetric tie:
    assert out[0]["winner_ids"] == [0]
    out = rows(game.settle(decisions([0, 20, 40, 20])))  # mean 20, target 10: 0 and 20 tie
    assert out[0]["target"] == pytest.approx(10)
    assert out[0]["n_winners"] == 3
    assert out[0]["winner_ids"] == [0, 1, 3]


def test_offset_variant_five_plus_half() -> None:
    game = BeautyContest(BeautyContestParams(p=0.5, offset=5, variant="P7"))
    out = rows(game.settle(decisions([10, 30, 50])))  # mean 30, target 20
    assert out[0]["target"] == pytest.approx(20)
    assert out[0]["winning_value"] == 10 or out[0]["winning_value"] == 30
    assert out[0]["n_winners"] == 2


def test_groups_have_their_own_targets() -> None:
    game = BeautyContest(BeautyContestParams(p=0.5, groups=2))
    out = rows(game.settle(decisions([10, 90, 30, 70], groups=[0, 1, 0, 1])))
    assert out[0]["mean"] == pytest.approx(20) and out[0]["target"] == pytest.approx(10)
    assert out[1]["mean"] == pytest.approx(80) and out[1]["target"] == pytest.approx(40)
    assert out[0]["winner_ids"] == [0] and out[1]["winner_ids"] == [3]
    assert out[-1]["mean"] == pytest.approx(50)
    assert out[-1]["target"] is None
    assert out[-1]["winner_ids"] == [0, 3]


def test_invalid_answers_are_counted_and_left_out_of_the_mean() -> None:
    game = BeautyContest(BeautyContestParams())
    out = rows(game.settle(decisions([30, None, 150, 60])))
    assert out[0]["n"] == 4 and out[0]["n_valid"] == 2 and out[0]["n_invalid"] == 2
    assert out[0]["mean"] == pytest.approx(45)


def test_check_flags_unparseable_and_out_of_range() -> None:
    game = BeautyContest(BeautyContestParams(lo=0, hi=100))
    valid, errors = game.check(np.array([50.0, np.nan, 101.0, -1.0, 0.0, 100.0]))
    assert valid.tolist() == [True, False, False, False, True, True]
    assert errors == [None, "unparseable", "out_of_range", "out_of_range", None, None]


def test_group_assignment_is_balanced_and_id_based() -> None:
    game = BeautyContest(BeautyContestParams(groups=3, variant="P6"))
    g = game.assign_groups(np.arange(9))
    assert np.bincount(g).tolist() == [3, 3, 3]
    assert game.assign_groups(np.array([7]))[0] == g[7]


def test_answer_schema_puts_reasoning_before_guess() -> None:
    p1 = BeautyContest(BeautyContestParams(variant="P1"))
    p2 = BeautyContest(BeautyContestParams(variant="P2", max_reasoning_chars=50))
    assert list(p1.answer_schema()["properties"]) == ["guess"]
    schema = p2.answer_schema()
    assert list(schema["properties"]) == ["reasoning", "guess"]
    pattern = schema["properties"]["reasoning"]["pattern"]
    assert re.search(pattern, "mean 50, so 2/3 of it [33] ~ fine") and not re.search(pattern, "x" * 51)
    lengths = [n for n in range(80) if re.search(pattern, "x" * n)]
    assert lengths == list(range(len(lengths))) and 50 - 19 <= len(lengths) - 1 <= 50  # 0..k, k <= the cap
    assert not re.search(pattern, 'a "quote"') and not re.search(pattern, "caf\u00e9")  # 1 token >= 1 char
    assert re.fullmatch(p1.answer_regex(), '{"guess": 33.5}')
    assert re.fullmatch(p2.answer_regex(), json.dumps({"reasoning": "mean 50 so 33", "guess": 33}))
    assert not re.fullmatch(p2.answer_regex(), json.dumps({"reasoning": "x" * 51, "guess": 33}))


def test_prompts_shared_part_first_persona_last() -> None:
    game = BeautyContest(BeautyContestParams(variant="P5"))
    personas = pa.table({"agent_id": [0, 1], "description": ["A retired teacher.", "A chef."]})
    hist = History(round=1, total_rounds=1, public=None, own_values=np.zeros((2, 0)))
    chats = game.render(np.arange(2), np.zeros(2, np.int32), personas, hist, np.array([2]))
    assert chats[0][0] == chats[1][0]  # same system message
    assert chats[0][1]["content"].startswith("About you: A retired teacher.")
    assert "step by step" in chats[0][0]["content"]
    plain = BeautyContest(BeautyContestParams(variant="P1")).render(
        np.arange(2), np.zeros(2, np.int32), personas, hist, np.array([2]))
    assert "teacher" not in plain[0][1]["content"] and "step by step" not in plain[0][0]["content"]


def test_p5_uses_a_gated_background_and_falls_back_to_the_description() -> None:
    game = BeautyContest(BeautyContestParams(variant="P5"))
    personas = pa.table({
        "agent_id": [0, 1, 2],
        "description": ["A retired teacher.", "A chef.", "A nurse."],
        "background": ["Maria taught maths for forty years in Lyon.", "Nonsense text.", ""],
        "background_consistent": [True, False, True],
    })
    hist = History(round=1, total_rounds=1, public=None, own_values=np.zeros((3, 0)))
    chats = game.render(np.arange(3), np.zeros(3, np.int32), personas, hist, np.array([3]))
    assert chats[0][1]["content"].startswith("About you: Maria taught maths")
    assert chats[1][1]["content"].startswith("About you: A chef.")  # flagged by the gate
    assert chats[2][1]["content"].startswith("About you: A nurse.")  # empty background


def test_bad_params() -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        BeautyContestParams(p=0)
    with pytest.raises(ValidationError, match="lo"):
        BeautyContestParams(lo=100, hi=0)
    with pytest.raises(ValidationError, match="groups"):
        BeautyContestParams(variant="P6")


def test_max_answer_tokens_covers_the_longest_answer_one_token_per_character() -> None:
    for params in (BeautyContestParams(variant="P1"), BeautyContestParams(variant="P2"),
                   BeautyContestParams(variant="P2", lo=-1000, hi=1000, max_reasoning_chars=400),
                   BeautyContestParams(variant="P3", integer_only=True)):
        game = BeautyContest(params)
        guess = -123456.123456 if params.lo < 0 else 99.123456
        guess = int(guess) if params.integer_only else guess
        longest = {"reasoning": "x" * params.max_reasoning_chars, "guess": guess} if params.reasoning \
            else {"guess": guess}
        compact = json.dumps(longest, separators=(",", ":"))
        assert len(compact) + 1 <= game.max_answer_tokens()  # + end of text
        assert len(json.dumps(longest)) + 1 <= game.max_answer_tokens()  # spaced (regex) form
        if params.reasoning:  # the schema's cap: at most max_reasoning_chars
            fits = max(k for k in range(params.max_reasoning_chars + 30)
                       if re.fullmatch(capped_chars(params.max_reasoning_chars), "x" * k))
            assert fits <= params.max_reasoning_chars
            longest["reasoning"] = "x" * fits
        assert re.fullmatch(game.answer_regex(), json.dumps(longest))
    # The shipped default sampling budget covers the default reasoning cap.
    from crowdlab.experiments.config import SamplingConfig
    assert BeautyContest(BeautyContestParams(variant="P2")).max_answer_tokens() <= SamplingConfig().max_tokens


def _memory_round3(memory: str, variant: str = "P2", chars: int = 30) -> list[list[dict]]:
    game = BeautyContest(BeautyContestParams(variant=variant, memory=memory, memory_chars=chars))
    public = pa.table({"round": pa.array([1, 1, 2, 2], pa.int32()), "group": pa.array([0, -1, 0, -1], pa.int32()),
                       "mean": [50.0, 50.0, 30.0, 30.0], "target": [100 / 3, 100 / 3, 20.0, 20.0],
                       "winning_value": [33.0, 33.0, 20.0, 20.0]})
    texts = (pa.array(['{"reasoning":"Half of 100 is 50 and two thirds of that is about 33, so I go low.","guess":33}',
                       '{"reasoning":"No idea.","guess":150}']),
             pa.array(['{"reasoning":"Lower,\\n \\"now\\".","guess":22}', None]))
    hist = History(round=3, total_rounds=4, public=public, own_values=np.array([[33.0, 22.0], [np.nan, np.nan]]),
                   own_texts=texts if game.remembers_texts else ())
    personas = pa.table({"agent_id": [0, 1], "description": ["A chef.", "A nurse."]})
    return game.render(np.arange(2), np.zeros(2, np.int32), personas, hist, np.array([2]))


def test_memory_reasoning_shows_each_round_on_one_capped_line() -> None:
    user = [c[1]["content"] for c in _memory_round3("reasoning")]
    lines = user[0].splitlines()
    mine = [line for line in lines if line.startswith("Your round")]
    assert len(mine) == 2  # one line per earlier round
    assert mine[0].startswith("Your round 1 pick: 33 (distance to target 0.33)")
    assert '"Half of 100 is 50 and two thir..."' in mine[0]  # cut at memory_chars (30) + "..."
    assert 'your reasoning: "Lower, "now"."' in mine[1]  # JSON unescaped, whitespace collapsed
    assert all(len(line) <= 80 + 30 for line in mine)
    # Agent 1: round 1 out of range, round 2 text missing: no pick, reasoning only where given.
    other = [line for line in user[1].splitlines() if line.startswith("Your round")]
    assert other == ['Your round 1 pick: none valid, your reasoning: "No idea.".', "Your round 2 pick: none valid."]
    assert user[0].endswith("Round 3 of 4. What is your pick?")


def test_memory_none_and_numbers() -> None:
    none = _memory_round3("none")[0][1]["content"]
    assert "Your" not in none and "reasoning" not in none and "33 (distance" not in none
    assert "Results of the earlier rounds" in none  # the public outcome is not the agent's memory
    numbers = _memory_round3("numbers")[0][1]["content"]
    assert "Your picks so far: round 1: 33 (distance to target 0.33); round 2: 22 (distance to target 2)." in numbers
    assert "Half of" not in numbers
    # Each memory level adds to the one below it, and a remembered round is at most one line.
    assert len(none.splitlines()) + 1 == len(numbers.splitlines())
    reasoning = _memory_round3("reasoning")[0][1]["content"]
    assert len(reasoning.splitlines()) == len(none.splitlines()) + 2
    # P1 answers carry no reasoning: memory 'reasoning' shows the picks only.
    assert not BeautyContest(BeautyContestParams(variant="P1", memory="reasoning")).remembers_texts
    assert "Half of" not in _memory_round3("reasoning", variant="P1")[0][1]["content"]


def test_bad_memory() -> None:
    with pytest.raises(ValidationError, match="memory"):
        BeautyContestParams(memory="everything")
    with pytest.raises(ValidationError, match="memory_chars"):
        BeautyContestParams(memory_chars=0)
