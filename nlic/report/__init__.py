"""Reports of finished sweeps: collect every job's own result files into tables and plots.

>>> from nlic.report import build_report, collect_runs
>>> files = build_report(collect_runs("outputs/train/multiruns/bias_ablation/2026-..."), "report/")
"""

from nlic.report.build import build_report, log_wandb, report_rows
from nlic.report.collect import Run, collect_runs

__all__ = ["Run", "build_report", "collect_runs", "log_wandb", "report_rows"]
