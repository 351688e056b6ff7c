"""The beauty contest's settle shortcuts (one game settled once without a sort, the median
partitioned in place) give exactly the rows of the plain per-group computation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from crowdlab.experiments.scenarios import BeautyContest, BeautyContestParams


def reference(game: BeautyContest, t: pa.Table) -> list[dict]:
    """The straightforward settlement: every group and the pooled row from their own copies."""
    ids = t["agent_id"].to_numpy()
    groups = t["group"].to_numpy()
    values = t["value"].to_numpy(zero_copy_only=False).astype(np.float64)
    valid = t["valid"].to_numpy(zero_copy_only=False).astype(bool)
    p = game.params

    def outcome(g: int, sel: np.ndarray) -> dict:
        i, v = ids[sel & valid], values[sel & valid]
        row = {"group": g, "n": int(sel.sum()), "n_valid": int(v.size), "n_invalid": int(sel.sum() - v.size),
               "mean": None, "median": None, "std": None, "target": None, "winning_value": None,
               "n_winners": 0, "winner_ids": []}
        if v.size:
            mean = float(v.mean())
            target = p.offset + p.p * mean
            dist = np.abs(v - target)
            win = dist <= dist.min() + 1e-9
            row.update(mean=mean, median=float(np.median(v.copy())),
                       std=float(v.std(ddof=1)) if v.size > 1 else 0.0, target=target,
                       winning_value=float(v[win][0]), n_winners=int(win.sum()),
                       winner_ids=sorted(i[win].tolist()))
        return row

    rows = [outcome(g, groups == g) for g in range(p.groups)]
    pooled = outcome(-1, np.ones(ids.size, bool))
    if p.groups > 1:
        pooled.update(target=None, winning_value=None, n_winners=sum(r["n_winners"] for r in rows),
                      winner_ids=sorted(x for r in rows for x in r["winner_ids"]))
    for r in rows + [pooled]:
        r.update(p=p.p, offset=p.offset, lo=p.lo, hi=p.hi)
    return rows + [pooled]


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 1001])
@pytest.mark.parametrize("integer", [True, False])
def test_settle_matches_the_plain_computation(groups: int, n: int, integer: bool) -> None:
    rng = np.random.default_rng(n * 10 + groups)
    values = rng.integers(0, 101, n).astype(float) if integer else np.round(rng.uniform(0, 100, n), 2)
    values[rng.random(n) < 0.1] = np.nan  # invalid answers: left out of every statistic
    ids = rng.permutation(n * 3)[:n].astype(np.int64)  # ids neither sorted nor dense
    t = pa.table({"agent_id": ids, "group": (ids % groups).astype(np.int32), "value": values,
                  "valid": np.isfinite(values)})
    t = pa.concat_tables([t.slice(i, 97) for i in range(0, n, 97)])  # chunked, as shards are
    game = BeautyContest(BeautyContestParams(groups=groups, integer_only=integer,
                                             variant="P6" if groups > 1 else "P1"))
    got = game.settle(t).to_pylist()
    assert got == reference(game, t)  # exact: same floats bit for bit
    assert [r["group"] for r in got] == list(range(groups)) + [-1]


def test_one_game_with_every_answer_invalid() -> None:
    t = pa.table({"agent_id": np.arange(4, dtype=np.int64), "group": np.zeros(4, np.int32),
                  "value": np.full(4, np.nan), "valid": np.zeros(4, bool)})
    game = BeautyContest(BeautyContestParams())
    assert game.settle(t).to_pylist() == reference(game, t)
