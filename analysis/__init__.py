"""Analysis of crowdlab run folders: loading, metrics, reference data, plots and reports.

Reads only what the run folder contract (docs/contracts.md) puts on disk; never imports the
experiment runner.
"""

from crowdlab.analysis.breakdown import breakdown
from crowdlab.analysis.levelk import level_k_points, level_k_shares
from crowdlab.analysis.loading import RunData, RunFolderError, load
from crowdlab.analysis.metrics import convergence, equilibrium, round_metrics
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
    "RunData", "RunFolderError", "breakdown", "compare_conditions", "convergence", "equilibrium",
    "field_contests", "fidelity", "human_reference", "level_k_points", "level_k_shares", "load",
    "paper_comparison", "paper_reference", "replicate_ci", "round_metrics", "summary_markdown",
    "summary_table", "write_report",
]
