"""A job's Lightning loggers: log results to all of them, find the W&B one, say where its run is, close it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning import loggers as pl_loggers


class WandbLogger(pl_loggers.WandbLogger):
    """Lightning's W&B logger (``conf/logger/wandb.yaml``), minus the ``anonymous=None`` Lightning hands
    to ``wandb.init`` by default, which recent wandb answers on every run with "WARNING The anonymous
    setting has no effect"."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)


def wandb_logger(loggers: Iterable[Any]) -> pl_loggers.WandbLogger | None:
    """The first W&B logger among ``loggers`` (None without one)."""
    return next((lg for lg in loggers if isinstance(lg, pl_loggers.WandbLogger)), None)


def scalar_metrics(summary: dict, prefix: str = "eval/") -> dict[str, float]:
    """The finite numbers of a results summary as ``{prefix + key: float}`` (None and inf left out)."""
    return {f"{prefix}{k}": float(v) for k, v in summary.items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))}


def log_results(rows: Sequence[dict], scalars: dict[str, float], loggers: Iterable[Any],
                table: str = "eval/results") -> None:
    """``scalars`` on every logger; on W&B also the per-image ``rows`` as a table and in the run summary."""
    loggers = list(loggers)
    wandb_lg = wandb_logger(loggers)
    for lg in loggers:
        if lg is not wandb_lg:
            lg.log_metrics(scalars)
    if wandb_lg is not None:
        import wandb

        if rows:
            cols = list(rows[0])
            wandb_lg.experiment.log({table: wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in rows])})
        wandb_lg.experiment.log(scalars)
        wandb_lg.experiment.summary.update(scalars)


def wandb_location(loggers: Iterable[Any]) -> list[str]:
    """Where the W&B run is: its URL, or its offline folder and the ``wandb sync`` command that uploads it."""
    lg = wandb_logger(loggers)
    run = getattr(lg, "experiment", None) if lg is not None else None
    run_dir = getattr(run, "dir", None)
    if not isinstance(run_dir, str):  # no run (rank > 0 gets a dummy experiment)
        return []
    if getattr(run, "offline", False):
        folder = Path(run_dir).parent  # .../wandb/offline-run-<time>-<id>/files -> the run folder
        return [f"W&B run (offline): {folder}", f"upload it with: wandb sync {folder}"]
    return [f"W&B run: {run.url}"]


def finish_wandb(loggers: Iterable[Any]) -> None:
    """Close the W&B run (jobs of one multirun share a process: each closes its own)."""
    lg = wandb_logger(loggers)
    if lg is not None:
        lg.experiment.finish()
