"""Non-LLM opinion dynamics on the network (``backend: {kind: opinion_dynamics}``), vectorised
over the CSR in-neighbour index the opinion scenario hands over (``context['peers']``).

* ``degroot`` (DeGroot 1974): the new stance is ``self_weight`` x own + the rest x the
  weighted mean of the in-neighbours' last stances.
* ``bounded_confidence`` (Hegselmann & Krause 2002): the new stance is the weighted mean of the
  own stance and the in-neighbours' stances within ``epsilon`` of it (the own stance has weight 1).
  Synchronous, so every agent reads only last round's stances: shard-invariant by construction
  (Deffuant's pairwise random meetings depend on the order of updates, so they are left out).

Round 1 answers the scenario's initial stance (persona attributes + seeded noise). Optional
Gaussian noise is drawn from the request seed. With messages on, each agent posts its stance as
a short text (so the message path is exercised at scale without an LLM).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field
from scipy import special

from crowdlab.experiments.backends.base import RequestBatch, ResponseBatch
from crowdlab.experiments.backends.settings import BackendSettings
from crowdlab.experiments.seeding import uniforms

_STREAM_NOISE = 7


class OpinionDynamicsConfig(BackendSettings):
    kind: Literal["opinion_dynamics"] = "opinion_dynamics"
    model: Literal["degroot", "bounded_confidence"] = "bounded_confidence"
    self_weight: float = Field(0.5, ge=0, le=1, description="DeGroot: weight of the own last stance")
    epsilon: float = Field(1.0, ge=0, description="bounded confidence: largest gap to a stance still heard")
    noise_sd: float = Field(0.0, ge=0, description="Gaussian noise added each round (scale units)")
    render_prompts: bool = Field(False, description="let the runner build and store each agent's prompt (posts "
                                 "read included) as for an LLM; the answers do not depend on it")

    def default_label(self) -> str:
        return "degroot" if self.model == "degroot" else f"hk-eps{self.epsilon:g}"

    def build(self) -> "OpinionDynamicsBackend":
        return OpinionDynamicsBackend(self)


def update(model: str, x: np.ndarray, peers: Any, self_weight: float, epsilon: float) -> np.ndarray:
    """One synchronous step for a batch: own stances ``x`` and their ``PeerView``."""
    rows = peers.rows()
    v, w = peers.values, peers.weights
    heard = np.isfinite(v) & np.isfinite(x[rows])
    if model == "bounded_confidence":
        heard &= np.abs(v - x[rows]) <= epsilon
    wv = np.where(heard, w * v, 0.0)
    wsum = np.bincount(rows, np.where(heard, w, 0.0), minlength=x.size)
    vsum = np.bincount(rows, wv, minlength=x.size)
    if model == "degroot":
        mean = np.divide(vsum, wsum, out=x.copy(), where=wsum > 0)
        return self_weight * x + (1 - self_weight) * mean
    return (x + vsum) / (1.0 + wsum)


class OpinionDynamicsBackend:
    name = "opinion_dynamics"

    def __init__(self, config: OpinionDynamicsConfig) -> None:
        self.config = config
        self.needs_prompts = config.render_prompts

    def generate(self, batch: RequestBatch) -> ResponseBatch:
        from crowdlab.experiments.network.opinion import initial_stance  # the scenario's, lazily

        start = time.perf_counter()
        ctx = batch.context
        if ctx.get("scenario") != "opinion":
            raise ValueError(f"backend kind 'opinion_dynamics' plays scenario kind 'opinion', not {ctx.get('scenario')!r}")
        params = ctx["initial"]
        n = len(batch)
        start_x = initial_stance(params, batch.personas, batch.agent_ids)
        if ctx["round"] == 1 or ctx.get("peers") is None:
            x = start_x
        else:
            own = np.where(np.isfinite(ctx["own_last"]), ctx["own_last"], start_x)
            x = update(self.config.model, own, ctx["peers"], self.config.self_weight, self.config.epsilon)
        if self.config.noise_sd > 0 and ctx["round"] > 1:
            u = np.clip(uniforms(batch.seeds, _STREAM_NOISE), 1e-12, 1 - 1e-12)
            x = x + self.config.noise_sd * special.ndtri(u)
        iv, peers = ctx.get("intervention"), ctx.get("peers")
        if iv is not None and iv.stance is not None and ctx["round"] >= iv.round and peers is not None \
                and peers.seeded is not None:
            x = np.where(peers.seeded, iv.stance, x)  # committed agents hold the injected stance
        x = np.round(np.clip(x, ctx["low"], ctx["high"]), 6)
        stance = pc.cast(pa.array(x), pa.string())
        if ctx.get("messages"):
            post = pc.binary_join_element_wise('{"message": "I am at ', stance, ' on this.", "stance": ', stance, "}", "")
        else:
            post = pc.binary_join_element_wise('{"stance": ', stance, "}", "")
        elapsed = time.perf_counter() - start
        return ResponseBatch(texts=post.to_pylist(), input_tokens=np.zeros(n, np.int64),
                             output_tokens=np.zeros(n, np.int64), latency_s=np.full(n, elapsed / max(n, 1)),
                             errors=[None] * n, values=x)

    def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, **self.config.model_dump(mode="json")}
