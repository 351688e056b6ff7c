"""The p-beauty contest (Nagel 1995; the AgentScope paper's large-scale experiment).

Every agent picks a number in [lo, hi]; the target is ``offset + p * mean`` of its group's valid
picks; the pick closest to the target wins (ties share). Invalid answers (unparseable or out of
range) are kept with an error and left out of the average, and their count is reported.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.experiments.backends.base import Message
from crowdlab.experiments.scenarios import beauty_prompts as prompts
from crowdlab.experiments.scenarios.answer_parsing import extract_reasoning, parse_numbers
from crowdlab.experiments.scenarios.base import History
from crowdlab.experiments.scenarios.beauty_params import BeautyContestParams
from crowdlab.experiments.schema import ROUND_OUTCOME_SCHEMA

_TIE_TOL = 1e-9
#: Characters a reasoning string may hold: printable ASCII but the double quote and backslash.
REASONING_CHARS = r"[ !#-\[\]-~]"

_CHUNK = 20


def capped_chars(n: int) -> str:
    """A regex for 0 to at most ``n`` reasoning characters. Above 20 it is written as up to q
    blocks of exactly 20 then 0-19 more (``q * 20 + 19 <= n``, so the cap may be up to 19 below
    ``n``): xgrammar 0.2.8 fails to compile a plain ``{0,200}`` inside a JSON-schema pattern for
    SmolLM2's vocabulary, and a nested ``({0,20}){0,10}`` takes minutes to compile."""
    if n < _CHUNK:
        return f"{REASONING_CHARS}{{0,{n}}}"
    blocks = (n - (_CHUNK - 1)) // _CHUNK
    return f"({REASONING_CHARS}{{{_CHUNK}}}){{0,{blocks}}}{REASONING_CHARS}{{0,{_CHUNK - 1}}}"


def _no_self_description(personas: pa.Table, missing: np.ndarray) -> Exception:
    """The error of P5 personas with no text to show: no passed background, no description column."""
    from crowdlab.experiments.errors import ConfigError

    ids = personas["agent_id"].to_numpy()[missing] if "agent_id" in personas.column_names else np.flatnonzero(missing)
    return ConfigError("population", f"P5 shows each persona's self-description, but {int(missing.sum())} persona(s) "
                       f"(first agent_id {int(ids[0])}) have no background that passed the consistency gate and the "
                       "population has no 'description' column to fall back on: add a description attribute to "
                       "the spec, or raise the gate's max_tries")


class BeautyContest:
    """Rules, prompts, parsing and settling for one condition's parameters."""

    name = "beauty_contest"

    def __init__(self, params: BeautyContestParams) -> None:
        self.params = params

    # -- set-up ---------------------------------------------------------------------------
    def required_persona_columns(self) -> set[str]:
        """None that must all be there: P5 reads ``description`` or ``background`` (``trial_render``)."""
        return set()

    def trial_render(self, persona_columns: list[str]) -> None:
        """Preflight: P5 shows each persona's self-description, which needs a ``description``
        column or LLM ``background``s (either will do); refused before any work otherwise."""
        if self.params.variant == "P5" and not {"description", "background"} & set(persona_columns):
            from crowdlab.experiments.errors import ConfigError

            raise ConfigError("scenario.variant", "P5 shows each persona's self-description: the population "
                              "needs a 'description' column or LLM backgrounds (population.backgrounds, or a "
                              "persona table with a 'background' column)")

    @property
    def remembers_texts(self) -> bool:
        """Whether prompts show the agents' own earlier reasoning (the runner then loads texts)."""
        return self.params.memory == "reasoning" and self.params.reasoning

    def n_groups(self) -> int:
        return self.params.groups

    def assign_groups(self, agent_ids: np.ndarray) -> np.ndarray:
        """Round-robin on the id: balanced, fixed across rounds and shard-independent (persona
        rows are sampled independently, so this is a random split)."""
        return (np.asarray(agent_ids, dtype=np.int64) % self.params.groups).astype(np.int32)

    # -- prompts --------------------------------------------------------------------------
    def answer_schema(self) -> dict[str, Any]:
        """JSON schema of the answer. The reasoning is plain printable ASCII without quotes or
        backslashes, at most ``max_reasoning_chars`` long: every token then carries at least one
        character, so the whole answer fits in ``max_answer_tokens()`` and always closes. (A
        ``pattern`` rather than ``maxLength``: xgrammar ignores maxLength beside a pattern.)"""
        guess = {"type": "integer" if self.params.integer_only else "number",
                 "minimum": self.params.lo, "maximum": self.params.hi}
        props: dict[str, Any] = {}
        if self.params.reasoning:
            n = self.params.max_reasoning_chars
            props["reasoning"] = {"type": "string", "pattern": f"^{capped_chars(n)}$"}
        props["guess"] = guess
        return {"type": "object", "properties": props, "required": list(props),
                "additionalProperties": False}

    def answer_regex(self) -> str:
        digits = r"-?\d{1,6}" if self.params.integer_only else r"-?\d{1,6}(\.\d{1,6})?"
        guess = r'"guess": ?' + digits
        if self.params.reasoning:
            n = self.params.max_reasoning_chars
            return r'\{"reasoning": ?"' + capped_chars(n) + r'", ?' + guess + r"\}"
        return r"\{" + guess + r"\}"

    def max_answer_tokens(self) -> int:
        """Most tokens a structured (compact JSON) answer can take, end-of-text included: one
        token per character at worst. ``sampling.max_tokens`` at or above it never truncates."""
        p = self.params
        int_digits = len(str(int(max(abs(p.lo), abs(p.hi)))))
        guess = 1 + max(int_digits, 6) + (0 if p.integer_only else 1 + 6)  # sign, digits, '.', decimals
        keys = len('{"guess":}') + (len('"reasoning":"",') + p.max_reasoning_chars if p.reasoning else 0)
        return keys + guess + 3 + 1  # optional spaces of the regex form, end of text

    def _group_targets(self, public: pa.Table | None, rounds_before: int) -> np.ndarray:
        """(n_groups, rounds_before) targets of earlier rounds, NaN where missing."""
        out = np.full((self.params.groups, rounds_before), np.nan)
        if public is None or rounds_before == 0:
            return out
        t = public.filter(pc.greater_equal(public["group"], 0))
        g = t["group"].to_numpy()
        r = t["round"].to_numpy() - 1
        v = t["target"].to_numpy(zero_copy_only=False).astype(np.float64)
        keep = r < rounds_before
        out[g[keep], r[keep]] = v[keep]
        return out

    def render(
        self, agent_ids: np.ndarray, groups: np.ndarray, personas: pa.Table, history: History,
        group_sizes: np.ndarray,
    ) -> list[list[Message]]:
        p = self.params
        systems = [prompts.system_prompt(p, int(s), history.total_rounds) for s in group_sizes]
        prefixes = [prompts.public_history(history.public, g) for g in range(p.groups)]
        descriptions = self._persona_texts(personas) if p.variant == "P5" else None
        targets = self._group_targets(history.public, history.round - 1)[groups]
        reasoning = [extract_reasoning(t, p.memory_chars) for t in history.own_texts]
        tails = prompts.agent_tails(p, descriptions, history.own_values, targets, history.round,
                                    history.total_rounds, reasoning)
        return prompts.chats(systems, prefixes, groups, tails)

    @staticmethod
    def _persona_texts(personas: pa.Table) -> list[str]:
        """P5's self-description: the LLM-written background where it passed the consistency
        gate, else the one-line templated ``description``. A table with backgrounds but no
        description column works as long as every background passed; a persona whose did not
        has nothing to show, and the run stops naming the missing column (``ConfigError``)."""
        has_description = "description" in personas.column_names
        if "background" not in personas.column_names:
            if not has_description:  # preflight refuses this; a table swapped under a run lands here
                raise _no_self_description(personas, np.ones(personas.num_rows, dtype=bool))
            return personas["description"].to_pylist()
        passed = pc.fill_null(personas["background_consistent"], False) \
            if "background_consistent" in personas.column_names else pa.scalar(True)
        usable = pc.and_(passed, pc.greater(pc.fill_null(pc.utf8_length(personas["background"]), 0), 0))
        if has_description:
            return pc.if_else(usable, personas["background"], personas["description"]).to_pylist()
        bad = ~np.asarray(usable.to_numpy(zero_copy_only=False), dtype=bool)
        if bad.any():
            raise _no_self_description(personas, bad)
        return personas["background"].to_pylist()

    def context(self, groups: np.ndarray, history: History) -> dict[str, Any]:
        """Numbers for non-LLM backends: rules plus per-agent last mean/target/own pick."""
        p = self.params
        n = groups.shape[0]
        last_mean = np.full(n, np.nan)
        last_target = np.full(n, np.nan)
        if history.public is not None and history.round > 1:
            t = history.public.filter(pc.and_(pc.equal(history.public["round"], history.round - 1),
                                              pc.greater_equal(history.public["group"], 0)))
            means = np.full(p.groups, np.nan)
            tgts = np.full(p.groups, np.nan)
            gi = t["group"].to_numpy()
            means[gi] = t["mean"].to_numpy(zero_copy_only=False).astype(np.float64)
            tgts[gi] = t["target"].to_numpy(zero_copy_only=False).astype(np.float64)
            last_mean, last_target = means[groups], tgts[groups]
        own_last = history.own_values[:, -1] if history.own_values.shape[1] else np.full(n, np.nan)
        return {"scenario": self.name, "p": p.p, "offset": p.offset, "lo": p.lo, "hi": p.hi,
                "variant": p.variant, "integer_only": p.integer_only, "round": history.round,
                "total_rounds": history.total_rounds, "last_mean": last_mean,
                "last_target": last_target, "own_last": own_last}

    # -- answers --------------------------------------------------------------------------
    def parse(self, texts: list[str]) -> np.ndarray:
        return parse_numbers(texts)

    def check(self, values: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        finite = np.isfinite(values)
        in_range = finite & (values >= self.params.lo) & (values <= self.params.hi)
        codes = np.where(in_range, 0, np.where(finite, 2, 1))
        names: list[str | None] = [None, "unparseable", "out_of_range"]
        return in_range, [names[c] for c in codes.tolist()]

    # -- outcome --------------------------------------------------------------------------
    def _outcome(self, group: int, ids: np.ndarray, values: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
        v = values[valid]  # a copy: the median below partitions it in place
        row: dict[str, Any] = {"group": group, "n": int(ids.size), "n_valid": int(v.size),
                               "n_invalid": int(ids.size - v.size), "mean": None, "median": None,
                               "std": None, "target": None, "winning_value": None, "n_winners": 0,
                               "winner_ids": []}
        if v.size:
            mean = float(v.mean())
            target = self.params.offset + self.params.p * mean
            dist = np.abs(v - target)
            win = dist <= dist.min() + _TIE_TOL
            at = np.flatnonzero(win)
            winners = (ids if v.size == ids.size else ids[valid])[at]
            row.update(mean=mean, std=float(v.std(ddof=1)) if v.size > 1 else 0.0,
                       target=target, winning_value=float(v[at[0]]), n_winners=int(winners.size),
                       winner_ids=np.sort(winners).tolist())
            row["median"] = float(np.median(v, overwrite_input=True))  # same partition, no second copy
        return row

    def settle(self, decisions: pa.Table) -> pa.Table:
        """One row per group plus ``group`` -1 for everyone. With one group, -1 repeats group 0;
        with several, -1 has the pooled statistics, no target, and every group's winners."""
        ids = decisions["agent_id"].to_numpy()
        groups = decisions["group"].to_numpy()
        values = decisions["value"].to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        valid = decisions["valid"].to_numpy(zero_copy_only=False).astype(bool, copy=False)
        if self.params.groups == 1 and not groups.any():  # one game: no sort, settled once
            row = self._outcome(0, ids, values, valid)
            rows = [row, {**row, "group": -1}]
            for r in rows:
                r.update(p=self.params.p, offset=self.params.offset, lo=self.params.lo, hi=self.params.hi)
            return pa.Table.from_pylist(rows, schema=ROUND_OUTCOME_SCHEMA)
        order = np.argsort(groups, kind="stable")
        bounds = np.searchsorted(groups[order], np.arange(self.params.groups + 1))
        rows = []
        for g in range(self.params.groups):
            sl = order[bounds[g]:bounds[g + 1]]
            rows.append(self._outcome(g, ids[sl], values[sl], valid[sl]))
        pooled = self._outcome(-1, ids, values, valid)
        if self.params.groups > 1:
            pooled.update(target=None, winning_value=None,
                          n_winners=sum(r["n_winners"] for r in rows),
                          winner_ids=sorted(i for r in rows for i in r["winner_ids"]))
        rows.append(pooled)
        for r in rows:
            r.update(p=self.params.p, offset=self.params.offset, lo=self.params.lo, hi=self.params.hi)
        return pa.Table.from_pylist(rows, schema=ROUND_OUTCOME_SCHEMA)
