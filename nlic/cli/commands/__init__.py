"""Sub-commands of ``nlic``; each module exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse


def add_wandb_arguments(p: argparse.ArgumentParser, project: str = "nlic", group: bool = False) -> None:
    """``--wandb`` (offline unless ``WANDB_MODE`` says otherwise), ``--wandb-project`` and, for
    commands whose runs belong together, ``--wandb-group``."""
    p.add_argument("--wandb", action="store_true", help="log tables and plots to W&B (offline by default)")
    p.add_argument("--wandb-project", default=project, help=f"W&B project (default {project})")
    if group:
        p.add_argument("--wandb-group", default=None, help="W&B group (e.g. the sweep name)")
