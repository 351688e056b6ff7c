"""Analysis of crowdlab run folders: loading, metrics, reference data, plots and reports.

Reads only what the run folder contract (docs/contracts.md) puts on disk; never imports the
experiment runner.
"""

from crowdlab.analysis.breakdown import breakdown
from crowdlab.analysis.field_reference import field_distances, field_fidelity
from crowdlab.analysis.fields import answer_fields, field_summary, is_beauty_contest, option_shares
from crowdlab.analysis.levelk import level_k_points, level_k_shares
from crowdlab.analysis.loading import RunData, RunFolderError, load
from crowdlab.analysis.metrics import convergence, equilibrium, round_metrics
from crowdlab.analysis.prompts import show_decision
from crowdlab.analysis.reference import (
    field_contests,
    fidelity,
    human_reference,
    paper_comparison,
    paper_reference,
)
from crowdlab.analysis.report import summary_markdown, summary_table, write_report
from crowdlab.analysis.stats import compare_conditions, replicate_ci

__all__ = [
    "RunData", "RunFolderError", "answer_fields", "breakdown", "compare_conditions", "convergence",
    "equilibrium", "field_contests", "field_distances", "field_fidelity", "field_summary", "is_beauty_contest",
    "option_shares", "show_decision", "fidelity", "human_reference", "level_k_points", "level_k_shares", "load",
    "paper_comparison", "paper_reference", "replicate_ci", "round_metrics", "summary_markdown",
    "summary_table", "write_report",
]
