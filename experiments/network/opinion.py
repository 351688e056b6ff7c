"""The opinion-dynamics scenario: each round every agent reports its stance on a policy question
on a scale, after seeing its in-neighbours' stances of the last round (and, with ``messages``,
their posts). Settling reports mean stance, polarisation (variance, bimodality coefficient),
stance assortativity on the network and the share of agents whose stance changed.

Besides the runner's ``Scenario`` protocol it offers the hooks the runner looks for:
``peer_view`` (what a shard reads from its in-neighbours, ``History.peers``) and
``settle_in_run`` (settling that reads the network and the previous round).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import special, stats

from crowdlab.experiments.backends.base import Message
from crowdlab.experiments.network.intervention import seeders
from crowdlab.experiments.network.messages import readers_shown, write_round
from crowdlab.experiments.network.opinion_params import OpinionParams
from crowdlab.experiments.network.peers import PeerView, peer_view, stances
from crowdlab.experiments.network.run_files import network_graph, network_in_index
from crowdlab.experiments.scenarios.base import History
from crowdlab.experiments.schema import ROUND_OUTCOME_SCHEMA
from crowdlab.experiments.seeding import uniforms

OUTCOMES = ("variance", "bimodality", "assortativity", "changed_share", "exposed_share", "toward_share")
_STANCE = re.compile(r'"?stance"?\s*[:=]\s*"?(-?\d+(?:\.\d+)?)')
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_STREAM_INITIAL = 0x0F1


def initial_stance(params: OpinionParams, personas: pa.Table, agent_ids: np.ndarray) -> np.ndarray:
    """Round-1 stances: mean + persona shifts + seeded noise (a function of the agent id), clipped."""
    spec = params.initial
    x = np.full(agent_ids.shape[0], spec.mean, dtype=np.float64)
    for column, shifts in spec.shift.items():
        values = pc.cast(personas[column], pa.string()).fill_null("").to_numpy(zero_copy_only=False)
        for level, delta in shifts.items():
            x += np.where(values == level, delta, 0.0)
    if spec.sd > 0:
        u = np.clip(uniforms(np.asarray(agent_ids, np.int64) ^ np.int64(spec.seed), _STREAM_INITIAL), 1e-12, 1 - 1e-12)
        x += spec.sd * special.ndtri(u)
    return np.clip(x, params.low, params.high)


def bimodality(x: np.ndarray) -> float:
    """Sarle's bimodality coefficient (sample-corrected skewness and excess kurtosis); above
    5/9 (the uniform's value) suggests two modes."""
    n = x.size
    if n < 4 or np.std(x) == 0:
        return float("nan")
    g = stats.skew(x, bias=False)
    k = stats.kurtosis(x, bias=False)
    return float((g * g + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


def assortativity(x: np.ndarray, source: np.ndarray, target: np.ndarray, directed: bool = True) -> float:
    """Pearson correlation of stances across the network's ties, over ties whose two ends both
    have a stance; an undirected tie counts both ways (the symmetric form, Newman 2003)."""
    a, b = x[source], x[target]
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2:
        return float("nan")
    if not ok.all():
        a, b = a[ok], b[ok]
    if directed:
        a = a - a.mean()
        b = b - b.mean()
        den = np.sqrt(np.dot(a, a) * np.dot(b, b))
        return float(np.dot(a, b) / den) if den > 0 else float("nan")
    mu = (a.sum() + b.sum()) / (2 * a.size)
    a = a - mu
    b = b - mu
    den = np.dot(a, a) + np.dot(b, b)
    return float(2 * np.dot(a, b) / den) if den > 0 else float("nan")


class OpinionScenario:
    """Stance on a scale, read from the network each round."""

    reads_network = True

    def __init__(self, params: OpinionParams) -> None:
        self.params = params
        self.name = params.name

    # -- set-up -------------------------------------------------------------------------
    def required_persona_columns(self) -> set[str]:
        return set(self.params.initial.shift)

    def n_groups(self) -> int:
        return 1

    def assign_groups(self, agent_ids: np.ndarray) -> np.ndarray:
        return np.zeros(np.asarray(agent_ids).shape[0], np.int32)

    def peer_view(self, ctx: Any, condition_id: str, replicate: int, round_: int, lo: int, hi: int) -> PeerView:
        return peer_view(ctx, condition_id, replicate, round_, lo, hi, self.params.messages, self.params.intervention)

    # -- prompts ------------------------------------------------------------------------
    def _scale(self) -> str:
        p = self.params
        return f"{p.low:g} ({p.low_label}) to {p.high:g} ({p.high_label})"

    def render(self, agent_ids: np.ndarray, groups: np.ndarray, personas: pa.Table, history: History,
               group_sizes: np.ndarray) -> list[list[Message]]:
        p = self.params
        system = (f"You are a member of an online community discussing one question: {p.question}\n"
                  f"Each round you read what people you follow think, then give your own stance on a scale from "
                  f"{self._scale()}. You may change your mind or keep it.")
        ask = f'Round {history.round} of {history.total_rounds}: what is your stance now? Answer in JSON: {{"stance": <whole number>}}'
        if p.messages is not None:  # the instructions in the system prompt, which every agent shares (prefix cache)
            system += (f"\nEach round you also write a short post for the people who follow you (at most "
                       f'{p.messages.max_chars} characters). Answer in JSON: {{"message": "<post>", "stance": <whole number>}}')
            ask = f"Round {history.round} of {history.total_rounds}: write your post, then give your stance."
        described = "description" in personas.column_names
        desc = personas["description"].to_pylist() if described else [None] * len(agent_ids)
        own = history.own_values[:, -1] if history.own_values.shape[1] else initial_stance(p, personas, agent_ids)
        peers = history.peers
        counts = np.diff(peers.indptr) if peers is not None else np.zeros(len(agent_ids), np.int64)
        chats = []
        for i in range(len(agent_ids)):
            lines = [f"About you: {desc[i]}"] if desc[i] else []
            if np.isfinite(own[i]):
                lines.append(f"Your stance {'so far' if history.round > 1 else 'before the discussion'}: {own[i]:.0f}")
            if history.round > 1 and peers is not None and counts[i]:
                v = peers.values[peers.indptr[i]:peers.indptr[i + 1]]
                v = v[np.isfinite(v)]
                if v.size:
                    mid = (p.low + p.high) / 2
                    lines.append(f"Last round, of the {v.size} people you follow who answered: mean stance {v.mean():.1f}; "
                                 f"{int((v > mid).sum())} leaned towards {p.high_label}, {int((v < mid).sum())} towards "
                                 f"{p.low_label}.")
            if peers is not None and peers.messages is not None:
                lines.extend(peers.messages.lines(i))
            lines.append(ask)
            chats.append([{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}])
        return chats

    def context(self, groups: np.ndarray, history: History) -> dict[str, Any]:
        own = history.own_values[:, -1] if history.own_values.shape[1] else np.full(groups.shape[0], np.nan)
        return {"scenario": "opinion", "round": history.round, "low": self.params.low, "high": self.params.high,
                "initial": self.params, "own_last": own, "peers": history.peers,
                "intervention": self.params.intervention,
                "messages": self.params.messages is not None}

    # -- answers ------------------------------------------------------------------------
    def answer_schema(self) -> dict[str, Any]:
        p = self.params
        props: dict[str, Any] = {"stance": {"type": "integer", "minimum": int(np.ceil(p.low)),
                                            "maximum": int(np.floor(p.high))}}
        required = ["stance"]
        if p.messages is not None:
            props = {"message": {"type": "string", "maxLength": p.messages.max_chars}, **props}
            required = ["message", "stance"]
        return {"type": "object", "properties": props, "required": required, "additionalProperties": False}

    def answer_regex(self) -> str | None:
        return None

    def parse(self, texts: list[str]) -> np.ndarray:
        out = np.full(len(texts), np.nan)
        for i, t in enumerate(texts):
            m = _STANCE.search(t or "") or _NUMBER.search(t or "")
            if m:
                out[i] = float(m.group(1) if m.re is _STANCE else m.group(0))
        return out

    def check(self, values: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
        finite = np.isfinite(values)
        inside = finite & (values >= self.params.low) & (values <= self.params.high)
        errors = np.where(~finite, "unparseable", np.where(inside, None, "out_of_range"))
        return inside, errors.tolist()

    # -- settling -----------------------------------------------------------------------
    def outcome_fields(self) -> list[pa.Field]:
        meaning = {"variance": "population variance of the stances (ddof=0)",
                   "bimodality": "Sarle's bimodality coefficient (> 5/9 suggests two camps)",
                   "assortativity": "Pearson correlation of stances across network ties",
                   "changed_share": "share of agents whose stance moved by >= change_threshold since last round",
                   "exposed_share": "intervention: share of the other agents shown the injected post among their at "
                                    "most k posts (without messages: a seeder among their in-neighbours) while it "
                                    "is readable (0 outside; null without intervention)",
                   "toward_share": "intervention with a stance: share of the other agents at least change_threshold "
                                   "closer to it than in the round before it"}
        return [pa.field(f"outcome_{k}", pa.float64(), metadata={"meaning": meaning[k]}) for k in OUTCOMES]

    def settle_columns(self) -> list[str]:
        """Decision columns settling reads beyond the runner's own: the answer text holds the post."""
        return ["text"] if self.params.messages is not None else []

    def settle(self, decisions: pa.Table) -> pa.Table:
        """Without the run (no network, no previous round): distribution outcomes only."""
        return self._outcome(self._values(decisions), {})

    def settle_in_run(self, ctx: Any, condition_id: str, replicate: int, round_: int, decisions: pa.Table) -> pa.Table:
        iv = self.params.intervention
        seeded = seeders(ctx, condition_id, iv) if iv is not None else None
        if self.params.messages is not None:  # stored before the round counts as settled
            injected = (seeded, iv.message) if iv is not None and round_ == iv.round else None
            write_round(ctx, condition_id, replicate, round_, decisions, self.params.messages.max_chars, injected)
        x = self._values(decisions)
        graph = network_graph(ctx)
        extra = {"assortativity": assortativity(x, graph.source, graph.target, graph.directed)}
        if iv is not None:
            extra.update(self._reach(ctx, condition_id, replicate, round_, x, seeded))
        if round_ > 1:
            prev = stances(ctx, condition_id, replicate, round_ - 1)
            both = np.isfinite(prev) & np.isfinite(x)
            extra["changed_share"] = float(np.mean(np.abs(x[both] - prev[both]) >= self.params.change_threshold)) \
                if both.any() else float("nan")
        return self._outcome(x, extra)

    def _reach(self, ctx: Any, condition_id: str, replicate: int, round_: int, x: np.ndarray,
               seeded: np.ndarray) -> dict[str, float]:
        """Diffusion of the intervention among the other agents: the share who read the injected
        post this round (among the at most k posts each is shown, within the posts' window; without
        posts, a seeder among the in-neighbours), and with a seeded stance the share now at least ``change_threshold``
        closer to it than before the intervention."""
        iv = self.params.intervention
        window = self.params.messages.window if self.params.messages is not None else 1
        others = ~seeded
        out = {"exposed_share": 0.0, "toward_share": float("nan")}
        if iv.round < round_ <= iv.round + window:
            if self.params.messages is not None:  # the injected post among the at most k each reader is shown
                exposed = readers_shown(ctx, self.params.messages, condition_id, replicate, round_,
                                        {iv.round: seeded})
            else:  # no posts: a seeder among the in-neighbours, whose stance every reader sees
                index = network_in_index(ctx)
                exposed = np.bincount(np.repeat(np.arange(index.n), index.in_degree()),
                                      seeded[index.senders].astype(float), minlength=index.n) > 0
            out["exposed_share"] = float(np.mean(exposed[others]))
        if iv.stance is not None and round_ >= iv.round and iv.round > 1:
            before = stances(ctx, condition_id, replicate, iv.round - 1)
            ok = others & np.isfinite(before) & np.isfinite(x)
            closer = np.abs(before[ok] - iv.stance) - np.abs(x[ok] - iv.stance)
            out["toward_share"] = float(np.mean(closer >= self.params.change_threshold)) if ok.any() else float("nan")
        return out

    @staticmethod
    def _values(decisions: pa.Table) -> np.ndarray:
        v = pc.if_else(decisions["valid"], decisions["value"], None)
        return v.to_numpy(zero_copy_only=False).astype(np.float64)

    def _outcome(self, x: np.ndarray, extra: dict[str, float]) -> pa.Table:
        ok = x[np.isfinite(x)]
        n, n_valid = x.size, ok.size
        row: dict[str, Any] = {f.name: None for f in ROUND_OUTCOME_SCHEMA}
        row.update(n=n, n_valid=n_valid, n_invalid=n - n_valid, lo=self.params.low, hi=self.params.high)
        if n_valid:
            row.update(mean=float(ok.mean()), median=float(np.median(ok)),
                       std=float(ok.std(ddof=1)) if n_valid > 1 else None)
        outcome = {"variance": float(ok.var()) if n_valid else float("nan"), "bimodality": bimodality(ok),
                   "assortativity": float("nan"), "changed_share": float("nan"), "exposed_share": float("nan"),
                   "toward_share": float("nan"), **extra}
        rows = [dict(row, group=0), dict(row, group=-1)]
        for r in rows:
            r.update({f"outcome_{k}": (None if not np.isfinite(v) else v) for k, v in outcome.items()})
        schema = pa.schema(list(ROUND_OUTCOME_SCHEMA) + self.outcome_fields())
        return pa.Table.from_pylist(rows, schema=schema)

    def describe(self) -> dict[str, Any]:
        return json.loads(self.params.model_dump_json())
