"""A scenario declared in YAML (``kind: declarative``): the runner's ``Scenario`` protocol on top
of typed answers (``experiments/answers``), sandboxed templates and settle rules.

Beyond the protocol it offers the runner two optional hooks (see ``scenarios/base.py``):
``answer_arrow_fields()`` (the typed ``answer_<field>`` decision columns) and
``answer_columns(texts, valid, errors)`` (those columns for a shard, validity and error causes
merged with the runner's own), and to the settle step ``settle_columns()`` and
``outcome_fields()`` (the ``outcome_<name>`` rounds columns).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crowdlab.experiments.answers import (
    ParsedAnswers, answer_arrow_fields, answer_schema, column_name, only_field, parse_answers,
)
from crowdlab.experiments.backends.base import Message
from crowdlab.experiments.scenarios.base import History
from crowdlab.experiments.scenarios.declarative_params import (
    DeclarativeParams, PayoffRule, SampleRule, group_value_names,
)
from crowdlab.experiments.scenarios.formula import Formula
from crowdlab.experiments.scenarios.settle_rules import OUTCOME_PREFIX, SAMPLE_TYPE, Settler
from crowdlab.experiments.scenarios.templates import SHARED_NAMES, Template, TemplateError, template_sources

_NUMERIC = ("number", "integer", "likert", "linear_scale")
#: Declaration keys the formula baseline needs to keep list answers valid (counts, ranks).
_BASELINE_LIMITS = {"min_selections", "max_selections", "top_k"}


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.2f}".rstrip("0").rstrip(".") if np.isfinite(x) else "n/a"
    if isinstance(x, list):
        return ", ".join(map(str, x))
    return "n/a" if x is None else str(x)


class DeclarativeScenario:
    """Rules, prompts, parsing and settling of one declarative condition."""

    remembers_texts = True  # the runner passes each agent's own earlier answer texts (History.own_texts)

    def __init__(self, params: DeclarativeParams) -> None:
        self.params = params
        self.name = params.name
        self.fields = params.fields
        self.primary = params.primary_field()
        self.settler = Settler(params)
        self.templates = {where: Template(src, where) for where, src in template_sources(params)}
        self.payoffs = {r.name: Formula(r.formula) for r in params.outcome if isinstance(r, PayoffRule)}

    # -- set-up ---------------------------------------------------------------------------
    def required_persona_columns(self) -> set[str]:
        return {c for t in self.templates.values() for c in t.persona_columns}

    def persona_column_path(self, column: str) -> str:
        """The config path of the first template reading ``persona.<column>``."""
        where = next((w for w, t in self.templates.items() if column in t.persona_columns), "prompts")
        return f"scenario.{where}"

    def n_groups(self) -> int:
        """Fixed for round-robin groups; 0 with ``group_size`` (the population decides)."""
        return self.params.groups if self.params.group_size is None else 0

    def assign_groups(self, agent_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(agent_ids, dtype=np.int64)
        if self.params.group_size is not None:
            return (ids // self.params.group_size).astype(np.int32)
        return (ids % self.params.groups).astype(np.int32)

    # -- answers --------------------------------------------------------------------------
    def answer_schema(self) -> dict[str, Any]:
        return answer_schema(self.fields)

    def answer_regex(self) -> str | None:
        return None  # engines use the JSON schema

    def answer_arrow_fields(self) -> list[pa.Field]:
        return answer_arrow_fields(self.fields)

    def parse(self, texts: list[str]) -> np.ndarray:
        """The primary field as a float (before its range check), NaN where unreadable."""
        n = len(texts)
        if self.primary is None:
            return np.full(n, np.nan)
        arr = pa.array(texts, pa.string()).fill_null("")
        f = self.fields[self.primary]
        only = only_field(self.fields, self.primary)
        raw = f.extract(arr, self.primary, only)
        if f.type_name in ("number", "integer"):
            return pc.cast(raw, pa.float64(), safe=False).to_numpy(zero_copy_only=False).astype(np.float64)
        return f.numeric(f.convert(raw)[0])  # type: ignore[return-value]

    def check(self, values: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        """Range check of the primary field (the whole answer is checked by answer_columns)."""
        if self.primary is None:
            return np.ones(values.shape[0], dtype=bool), [None] * values.shape[0]
        f = self.fields[self.primary]
        if f.type_name in ("number", "integer"):
            codes = f._codes(values)  # type: ignore[attr-defined]
            if f.type_name == "integer":
                codes = np.where((codes == 0) & (values != np.round(values)), 3, codes)
        else:
            codes = np.where(np.isfinite(values), 0, 1)
        names = np.array([None, "unparseable", "out_of_range", "not_integer"], dtype=object)
        return codes == 0, names[codes].tolist()

    def parse_all(self, texts: list[str] | pa.Array, only: list[str] | None = None) -> ParsedAnswers:
        return parse_answers(texts, self.fields, only)

    def answer_columns(self, texts: np.ndarray | list[str], valid: np.ndarray,
                       errors: np.ndarray) -> tuple[dict[str, pa.Array], np.ndarray, np.ndarray]:
        """Typed ``answer_<field>`` columns plus ``answer_errors``; a row stays invalid with its
        cause where the runner already found one (backend error, truncation, the primary's
        range), else takes the first invalid required field's cause."""
        parsed = self.parse_all(pa.array(list(texts), pa.string()))
        cols = {column_name(name): arr for name, arr in parsed.columns.items()}
        cols["answer_errors"] = parsed.errors_column()
        errors = np.asarray(errors, dtype=object)
        merged = np.where(np.equal(errors, None), parsed.error, errors)
        return cols, valid & parsed.valid, merged

    # -- settling ---------------------------------------------------------------------------
    @property
    def public_columns(self) -> list[str]:
        """Rounds columns the next rounds read (the runner's ``load_history``)."""
        extra = [f.name for f in self.outcome_fields() if pa.types.is_floating(f.type) or f.type == SAMPLE_TYPE]
        return ["round", "group", "n", "n_valid", "n_invalid", "mean", "median", "std", "target",
                "winning_value", *extra]

    def settle_columns(self) -> list[str]:
        return self.settler.columns_needed()

    def outcome_fields(self) -> list[pa.Field]:
        return self.settler.extra_fields()

    def settle(self, decisions: pa.Table) -> pa.Table:
        return self.settler.settle(decisions, self.n_groups())[0]

    # -- history ----------------------------------------------------------------------------
    def _group_values(self, public: pa.Table | None, round_: int, G: int) -> dict[str, np.ndarray]:
        """Per-group values of a settled round (NaN where missing), by name."""
        out: dict[str, np.ndarray] = {}
        if public is None:
            return out
        t = public.filter(pc.and_(pc.equal(public["round"], round_), pc.greater_equal(public["group"], 0)))
        gi = t["group"].to_numpy().astype(np.int64)
        size = max(G, int(gi.max(initial=-1)) + 1)
        for name in [*group_value_names(self.params), "target", "winning_value"]:
            col = name if name in t.column_names else OUTCOME_PREFIX + name
            if col not in t.column_names:
                continue
            arr = np.full(size, np.nan)
            arr[gi] = pc.cast(t[col], pa.float64()).to_numpy(zero_copy_only=False)
            out[name] = arr
        return out

    def _group_samples(self, public: pa.Table | None, round_: int) -> dict[str, dict[int, list[tuple[int, str]]]]:
        """Per sample rule, group -> [(agent id, answer)] of a settled round."""
        rules = [r for r in self.params.outcome if isinstance(r, SampleRule)]
        if public is None or not rules:
            return {}
        t = public.filter(pc.and_(pc.equal(public["round"], round_), pc.greater_equal(public["group"], 0)))
        groups = t["group"].to_pylist()
        out = {}
        for r in rules:
            col = OUTCOME_PREFIX + r.name
            if col in t.column_names:
                out[r.name] = {g: [(d["agent_id"], d["answer"]) for d in items or []]
                               for g, items in zip(groups, t[col].to_pylist())}
        return out

    def _own(self, history: History, k: int, only: list[str] | None = None) -> ParsedAnswers | None:
        """This batch's own answers of round k (1-based), parsed; None when not passed."""
        if len(history.own_texts) < k:
            return None
        return self.parse_all(history.own_texts[k - 1], only)

    def _own_payoffs(self, own: ParsedAnswers, groups: np.ndarray, gv: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, Any] = dict(self.params.numeric_parameters())
        env.update({k: v[groups] for k, v in gv.items() if v.size})
        for name, f in self.fields.items():
            if f.type_name in _NUMERIC:
                env[name] = f.numeric(own.columns[name])
        out = {}
        for name, formula in self.payoffs.items():
            try:
                out[name] = np.broadcast_to(np.asarray(formula(env), dtype=np.float64), groups.shape)
            except KeyError:  # a value the round did not settle (no valid answers)
                out[name] = np.full(groups.shape, np.nan)
        return out

    def context(self, groups: np.ndarray, history: History) -> dict[str, Any]:
        """Numbers for non-LLM backends: parameters, the primary field's bounds, and per agent
        ``last_<value>`` of its group's last round and ``own_last_<field>``."""
        n = groups.shape[0]
        lo, hi = self.settler.bounds()
        ctx: dict[str, Any] = {"scenario": self.name, **self.params.numeric_parameters(),
                               "lo": lo if lo is not None else 0.0, "hi": hi if hi is not None else 100.0,
                               "integer_only": self.primary is not None
                               and self.fields[self.primary].type_name != "number",
                               "round": history.round, "total_rounds": history.total_rounds,
                               "groups": groups,
                               "answer_fields": {k: {"type": f.type_name, "options": f.option_labels(),
                                                     **f.model_dump(include=_BASELINE_LIMITS)}
                                                 for k, f in self.fields.items()}}
        k = history.round - 1
        G = max(self.n_groups(), int(groups.max(initial=-1)) + 1)
        gv = self._group_values(history.public, k, G) if k >= 1 else {}
        for name in [*group_value_names(self.params), "target", "winning_value"]:
            ctx[f"last_{name}"] = gv[name][groups] if name in gv else np.full(n, np.nan)
        ctx["own_last"] = history.own_values[:, -1] if history.own_values.shape[1] else np.full(n, np.nan)
        # the primary field is the runner's own_values (NaN where the answer was invalid); the
        # other numeric fields are read again from the agent's last answer text
        numeric = [name for name, f in self.fields.items() if f.type_name in _NUMERIC and name != self.primary]
        own = self._own(history, k, numeric) if k >= 1 and numeric else None
        for name in numeric:
            ctx[f"own_last_{name}"] = self.fields[name].numeric(own.columns[name]) if own is not None \
                else np.full(n, np.nan)
        if self.primary is not None:
            ctx[f"own_last_{self.primary}"] = ctx["own_last"]
        ctx["primary"] = self.primary
        if self.params.baseline is not None:
            ctx["baseline"] = {"fields": dict(self.params.baseline.fields),
                               "parameters": dict(self.params.baseline.parameters)}
        return ctx

    # -- prompts ----------------------------------------------------------------------------
    def _history_entries(self, agent_ids: np.ndarray, groups: np.ndarray,
                         history: History, full: bool = False) -> list[list[dict[str, Any]]]:
        """Per agent, what it sees of each visible earlier round (``full``: every round and its
        own answers whatever ``visible`` says, for interviews)."""
        n = groups.shape[0]
        vis = self.params.visible
        if full:
            vis = vis.model_copy(update={"own_answers": True, "last_rounds": None})
        first = 1 if vis.last_rounds is None else max(1, history.round - vis.last_rounds)
        G = max(self.n_groups(), int(groups.max(initial=-1)) + 1)
        per_agent: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        for k in range(first, history.round):
            gv = self._group_values(history.public, k, G)
            own = self._own(history, k)
            pays = self._own_payoffs(own, groups, gv) if own is not None and self.payoffs else {}
            group_rows = [{name: (float(v[g]) if np.isfinite(v[g]) else None) for name, v in gv.items()}
                          for g in range(G)] if vis.group_outcome else None
            samples = self._group_samples(history.public, k)
            ks = {r.name: r.k for r in self.params.outcome if isinstance(r, SampleRule)}
            own_cols = {name: arr.to_pylist() for name, arr in own.columns.items()} if own is not None and \
                vis.own_answers else None
            for i in range(n):
                entry: dict[str, Any] = {"round": k, "own": {}, "outcome": {}}
                if own_cols is not None:
                    entry["own"] = {name: col[i] for name, col in own_cols.items()}
                    entry["own"].update({name: float(p[i]) for name, p in pays.items()})
                if group_rows is not None:
                    entry["outcome"] = dict(group_rows[groups[i]])
                for name, by_group in samples.items():  # others' answers, never the agent's own
                    others = [a for aid, a in by_group.get(int(groups[i]), []) if aid != agent_ids[i]]
                    entry["outcome"][name] = others[:ks[name]]
                per_agent[i].append(entry)
        return per_agent

    @staticmethod
    def _default_history(entries: list[dict[str, Any]]) -> str:
        if not entries:
            return ""
        lines = ["Earlier rounds:"]
        for e in entries:
            parts = []
            if e["own"]:
                parts.append("you answered " + ", ".join(f"{k} = {_fmt(v)}" for k, v in e["own"].items()
                                                         if v is not None and k != "reasoning"))
            if e["outcome"]:
                parts.append("your group: " + ", ".join(f"{k} {_fmt(v)}" for k, v in e["outcome"].items()
                                                        if k not in ("n", "n_valid", "n_invalid")))
            lines.append(f"Round {e['round']}: " + "; ".join(parts) + ".")
        return "\n".join(lines)

    def _example_value(self, name: str) -> Any:
        f = self.fields[name]
        labels = f.option_labels() or []
        if f.type_name in ("multi_choice", "ranking"):
            return labels[:1]
        if f.type_name in ("choice",):
            return labels[0]
        if f.type_name in ("likert", "linear_scale"):
            return int(labels[0])
        return "" if f.type_name in ("text", "reasoning") else 1.0

    def trial_render(self, persona_columns: list[str]) -> None:
        """Render every template for round 1 and a round 2 with example values, so that a name
        the variables do not have (``h.own.contribuion``) fails before the run, naming the
        template (``ConfigError``). Only missing names and sandbox refusals count here: a type
        clash on example values is left to the real run."""
        from crowdlab.experiments.errors import ConfigError

        own = {name: self._example_value(name) for name in self.fields} if self.params.visible.own_answers else {}
        own.update({name: 1.0 for name in self.payoffs})
        outcome = {name: 1.0 for name in [*group_value_names(self.params), "target", "winning_value"]} \
            if self.params.visible.group_outcome else {}
        outcome.update({r.name: ["1"] for r in self.params.outcome if isinstance(r, SampleRule)})
        entry = {"round": 1, "own": own, "outcome": outcome}
        # interviews always see the agent's own answers
        full_own = {name: self._example_value(name) for name in self.fields} | {name: 1.0 for name in self.payoffs}
        full_entry = {"round": 1, "own": full_own, "outcome": outcome}
        fields_info = [{"name": k, "type": f.type_name, "hint": f.format_hint(), "question": f.question}
                       for k, f in self.fields.items()]
        for history, full in (([], False), ([entry], False), ([full_entry], True)):
            var = {"params": dict(self.params.parameters), "round": len(history) + 1, "total_rounds": 2,
                   "n_groups": 1, "fields": fields_info, "persona": {c: "" for c in persona_columns},
                   "group": 0, "group_size": 4, "history": history, "last": history[-1] if history else None}
            for where, template in self.templates.items():
                if full != where.startswith("interview.") and not (full and where.startswith("prompts.")):
                    continue
                try:
                    template.render(var)
                except TemplateError as exc:
                    raise ConfigError(f"scenario.{where}", str(exc).split(": ", 1)[1]) from None
                except Exception:  # noqa: BLE001 - example values may not suit every filter
                    continue

    def answer_format(self) -> str:
        keys = ", ".join(f'"{name}": <{f.format_hint()}>' for name, f in self.fields.items())
        return "Answer with one JSON object and nothing else: {" + keys + "}"

    def render(self, agent_ids: np.ndarray, groups: np.ndarray, personas: pa.Table, history: History,
               group_sizes: np.ndarray) -> list[list[Message]]:
        p = self.params
        n = agent_ids.shape[0]
        columns = sorted(self.required_persona_columns())
        rows = personas.select(columns).to_pylist() if columns else [{}] * n
        entries = self._history_entries(agent_ids, groups, history)
        fields_info = [{"name": k, "type": f.type_name, "hint": f.format_hint(), "question": f.question}
                       for k, f in self.fields.items()]
        base = {"params": dict(p.parameters), "round": history.round, "total_rounds": history.total_rounds,
                "n_groups": max(self.n_groups(), len(group_sizes)), "fields": fields_info}
        system = self.templates["prompts.system"]
        shared = system.names <= SHARED_NAMES
        cache: dict[int, str] = {}
        fmt = self.answer_format() if p.prompts.answer_format else ""
        chats: list[list[Message]] = []
        for i in range(n):
            var = _agent_variables(base, rows[i], int(groups[i]), group_sizes, entries[i])
            if shared:
                size = var["group_size"]
                if size not in cache:
                    cache[size] = "\n\n".join(s for s in (system.render(var).strip(), fmt) if s)
                sys_text = cache[size]
            else:
                sys_text = "\n\n".join(s for s in (system.render(var).strip(), fmt) if s)
            hist = self.templates["prompts.history"].render(var) if "prompts.history" in self.templates \
                else self._default_history(entries[i])
            questions = [self.templates[f"questions.{j}.text"].render(var).strip() for j in range(len(p.questions))]
            user = "\n\n".join(s for s in (self.templates["prompts.user"].render(var).strip(), hist.strip(),
                                           *questions) if s)
            chats.append([{"role": "system", "content": sys_text}, {"role": "user", "content": user}])
        return chats

    # -- interviews -------------------------------------------------------------------------
    def interview_answer_format(self) -> str:
        assert self.params.interview is not None
        keys = ", ".join(f'"{name}": <{f.format_hint()}>' for name, f in self.params.interview.fields.items())
        return "Answer with one JSON object and nothing else: {" + keys + "}"

    def render_interview(self, agent_ids: np.ndarray, groups: np.ndarray, personas: pa.Table, history: History,
                         group_sizes: np.ndarray) -> list[list[Message]]:
        """The interview chats after round ``history.round - 1``: the game's system prompt and
        persona part, every earlier round with the agent's own answers (reasoning included) and
        what it saw, then the interview questions and their answer format."""
        p = self.params
        assert p.interview is not None
        n = agent_ids.shape[0]
        columns = sorted(self.required_persona_columns())
        rows = personas.select(columns).to_pylist() if columns else [{}] * n
        entries = self._history_entries(agent_ids, groups, history, full=True)
        fields_info = [{"name": k, "type": f.type_name, "hint": f.format_hint(), "question": f.question}
                       for k, f in p.interview.fields.items()]
        after = history.round - 1
        base = {"params": dict(p.parameters), "round": after, "total_rounds": history.total_rounds,
                "n_groups": max(self.n_groups(), len(group_sizes)), "fields": fields_info}
        fmt = self.interview_answer_format()
        chats: list[list[Message]] = []
        for i in range(n):
            var = _agent_variables(base, rows[i], int(groups[i]), group_sizes, entries[i])
            sys_text = self.templates["prompts.system"].render(var).strip()
            hist = self.templates["prompts.history"].render(var) if "prompts.history" in self.templates \
                else self._default_history(entries[i])
            own = "\n".join(f"Round {e['round']}, your reasoning: {e['own']['reasoning']}" for e in entries[i]
                            if e["own"].get("reasoning"))
            questions = [self.templates[f"interview.questions.{j}.prompt"].render(var).strip()
                         for j in range(len(p.interview.questions))]
            user = "\n\n".join(s for s in (self.templates["prompts.user"].render(var).strip(), hist.strip(), own,
                                            "Some follow-up questions about the rounds so far:", *questions,
                                            fmt) if s)
            chats.append([{"role": "system", "content": sys_text}, {"role": "user", "content": user}])
        return chats


def _agent_variables(base: dict[str, Any], persona: dict[str, Any], group: int, group_sizes: np.ndarray,
                     entries: list) -> dict[str, Any]:
    """One agent's template variables: the shared ``base`` plus its persona, group and history."""
    size = int(group_sizes[group]) if group < len(group_sizes) else 0
    return {**base, "persona": persona, "group": group, "group_size": size, "history": entries,
            "last": entries[-1] if entries else None}
