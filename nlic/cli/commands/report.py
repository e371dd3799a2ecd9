"""``nlic report SWEEP_DIR``: one table and a few plots for the runs of a finished sweep.

Reads every job folder's ``.hydra/overrides.yaml``, ``.hydra/config.yaml``, ``metrics.json`` and
``eval_results.json`` (nothing is recomputed, no network) and writes ``report.md``, ``report.csv``
and PNG plots (bpp vs tau, PSNR vs bpp, decode time vs context mask; MS-SSIM vs bpp for lossy-only
sweeps) into ``--out`` (default ``SWEEP_DIR/report``).  ``--wandb`` also logs them to W&B, offline
unless WANDB_MODE says otherwise, in the sweep's group.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nlic.cli.commands import add_command, add_wandb_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` sub-command."""
    p = add_command(subparsers, "report", "tables and plots of a finished sweep (nlic-train -m ...)",
                    "nlic report outputs/train/multiruns/bias_ablation/<time> --wandb",
                    description=__doc__.split("\n\n", 1)[1])
    p.add_argument("sweep_dir", type=Path, help="the sweep's folder (outputs/<task>/multiruns/<sweep>/<time>)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: SWEEP_DIR/report)")
    p.add_argument("--title", default=None, help="report title (default: the sweep's name)")
    add_wandb_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nlic.cli._hydra import setup_environment
    from nlic.report import build_report, collect_runs, log_wandb

    runs = collect_runs(args.sweep_dir)
    out = args.out if args.out is not None else args.sweep_dir / "report"
    files = build_report(runs, out, title=args.title)
    print(files["markdown"].read_text())
    for key, path in files.items():
        print(f"{key:20s} {path}")
    if args.wandb:
        setup_environment()
        print(f"{'wandb':20s} {log_wandb(runs, files, project=args.wandb_project)}")
    return 0
