"""Plot a run's training curve (train bpp and validation bpp per tau) from its CSV log.

    python benchmarks/plot_training_curve.py RUN_DIR OUT.png
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(run_dir: str, out: str) -> None:
    rows = list(csv.DictReader(open(next(Path(run_dir).rglob("metrics.csv")))))
    train = [(int(r["step"]), float(r["train/bpp"])) for r in rows if r.get("train/bpp")]
    val = [r for r in rows if r.get("val/bpp_tau0")]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(*zip(*train), lw=0.8)
    a.set(xlabel="optimizer step", ylabel="train bpp (tau = 0, estimated)", title="training")
    for tau in range(6):
        key = f"val/bpp_tau{tau}"
        pts = [(int(r["step"]), float(r[key])) for r in val if r.get(key)]
        if pts:
            b.plot(*zip(*pts), marker="o", ms=3, label=f"tau={tau}")
    b.set(xlabel="optimizer step", ylabel="validation bpp (estimated)", title="validation")
    b.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
