"""Runs written before invalid answers were counted by cause still load: the counts read as null."""

from __future__ import annotations

import pandas as pd

from crowdlab.analysis import load
from crowdlab.analysis.loading import CAUSE_COLUMNS


def test_old_rounds_without_cause_counts_load_as_null(small_run):
    assert not set(CAUSE_COLUMNS) & set(pd.read_parquet(small_run / "rounds.parquet").columns)
    run = load(small_run)
    rounds = run.rounds
    for column in CAUSE_COLUMNS:
        assert column in rounds and rounds[column].isna().all()
    assert not set(CAUSE_COLUMNS) & set(run.conditions.columns)  # counts are not design factors
