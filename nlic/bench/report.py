"""Reporting a benchmark: per-(codec, setting) means, the markdown table, plots, CompressAI JSON.

Conventions (also written under the table):

* ``bpp`` and ``PSNR`` are means of per-image values (CompressAI's convention); PSNR is ``inf`` for
  an exact reconstruction (written ``null`` in JSON files);
* ``max err`` is the worst image's maximum absolute sample error;
* ``s/MP`` is total seconds divided by total megapixels.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nlic.bench.codecs import CODECS
from nlic.bench.runner import BenchRow

VIOLATION = "BOUND VIOLATED"
FAILED = "FAILED"
_MD_RED = "🔴"


@dataclass
class Summary:
    """Aggregate of one codec at one setting over all images."""

    codec: str
    label: str
    tau: int | None
    distance: float | None
    bounded: bool
    images: int
    ok_images: int
    bpp: float | None
    psnr: float | None
    max_err: int | None
    enc_s: float | None
    dec_s: float | None
    enc_s_per_mp: float | None
    dec_s_per_mp: float | None
    violations: list[str]
    failures: list[str]
    channels: int = 3  # samples per pixel (1 for a grey bench)

    @property
    def bpsp(self) -> float | None:
        return None if self.bpp is None else self.bpp / self.channels

    @property
    def status(self) -> str:
        """``ok``, ``no bound``, ``BOUND VIOLATED (k/n)`` or ``FAILED (k/n)``."""
        if self.violations:
            return f"{VIOLATION} ({len(self.violations)}/{self.images})"
        if self.failures:
            return f"{FAILED} ({len(self.failures)}/{self.images})"
        return "ok" if self.bounded else "no bound"

    @property
    def setting(self) -> str:
        return str(self.tau) if self.distance is None else f"d={self.distance:g}"


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(rows: Sequence[BenchRow], channels: int = 3) -> list[Summary]:
    """Group rows by (codec, tau, distance), keeping the rows' order; ``channels``: samples per
    pixel of the coded images (bpsp = bpp / channels)."""
    groups: dict[tuple, list[BenchRow]] = {}
    for r in rows:
        groups.setdefault((r.codec, r.tau, r.distance), []).append(r)
    out = []
    for (codec, tau, distance), group in groups.items():
        cls = CODECS.get(codec)
        good = [r for r in group if r.error is None]
        mp = sum(r.width * r.height for r in good) / 1e6
        out.append(
            Summary(
                codec=codec,
                label=cls.label if cls else codec,
                tau=tau,
                distance=distance,
                bounded=cls.bounded if cls else distance is None,
                images=len(group),
                ok_images=len(good),
                bpp=_mean([r.bpp for r in good]),
                psnr=_mean([r.psnr for r in good]),
                max_err=max((r.max_err for r in good), default=None),
                enc_s=_mean([r.enc_s for r in good]),
                dec_s=_mean([r.dec_s for r in good]),
                enc_s_per_mp=sum(r.enc_s for r in good) / mp if good else None,
                dec_s_per_mp=sum(r.dec_s for r in good) / mp if good else None,
                violations=[r.image for r in group if r.bound_ok is False],
                failures=[r.image for r in group if r.error is not None and r.bound_ok is not False],
                channels=channels,
            )
        )
    return out


def fmt(value: float | None, digits: int = 3) -> str:
    """Table cell: ``-`` for missing, ``∞`` for infinite."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table_cells(s: Summary) -> list[str]:
    """The numeric cells shared by the markdown and console tables."""
    return [
        str(s.ok_images), fmt(s.bpp), fmt(s.bpsp), fmt(s.psnr, 2), fmt(s.max_err),
        fmt(s.enc_s_per_mp), fmt(s.dec_s_per_mp),
    ]  # fmt: skip


TABLE_HEADER = ["images", "bpp", "bpsp", "PSNR dB", "max err", "enc s/MP", "dec s/MP"]


def markdown(summary: Sequence[Summary], title: str = "nlic bench") -> str:
    """The results.md text: bounded codecs, then the unbounded reference, then conventions."""
    lines = [f"# {title}", ""]
    for s in summary:
        if s.violations:
            lines.append(
                f"{_MD_RED} **{VIOLATION}**: {s.label} at tau={s.tau} on {', '.join(s.violations)} "
                f"(max error {fmt(s.max_err)})  "
            )
    bounded = [s for s in summary if s.bounded]
    unbounded = [s for s in summary if not s.bounded]
    if bounded:
        lines += ["", "## Bounded codecs (verified: exact at tau=0, max error <= tau)", ""]
        lines += _md_table(["codec", "tau", *TABLE_HEADER, "bound"], bounded)
    if unbounded:
        lines += ["", "## Unbounded reference (no error bound; max error as measured)", ""]
        lines += _md_table(["codec", "distance", *TABLE_HEADER, "status"], unbounded)
    lines += [
        "",
        "bpp = 8 * bytes / (H * W) and PSNR are means of per-image values (∞ = lossless); "
        f"bpsp = bpp / {summary[0].channels if summary else 3}; max err = worst image; "
        "s/MP = total seconds / total megapixels.",
        "",
    ]
    return "\n".join(lines)


def _md_table(header: list[str], summary: Sequence[Summary]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summary:
        status = f"{_MD_RED} **{s.status}**" if s.violations or s.failures else s.status
        lines.append("| " + " | ".join([s.label, s.setting, *table_cells(s), status]) + " |")
    return lines


#: one colour per codec (registry order), never red: red marks violations
_PALETTE = ["C0", "C1", "C2", "C4", "C5", "C6", "C7", "C8", "C9"]


def _style(codec: str) -> dict:
    if codec == "nlic":
        return {"color": "black", "linewidth": 2.5}
    names = list(CODECS)
    index = names.index(codec) if codec in names else len(names) + sum(map(ord, codec))
    return {"color": _PALETTE[index % len(_PALETTE)]}


def _figure():
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    return fig, fig.subplots()


def plot_bpp_vs_tau(summary: Sequence[Summary], path: str | Path) -> Path:
    """bpp against tau for every bounded codec (single-point lossless codecs as markers)."""
    fig, ax = _figure()
    for codec in dict.fromkeys(s.codec for s in summary if s.bounded):
        pts = [s for s in summary if s.codec == codec and s.bpp is not None]
        if pts:
            ax.plot([s.tau for s in pts], [s.bpp for s in pts], marker="o", label=pts[0].label, **_style(codec))
    bad = [s for s in summary if s.violations and s.bpp is not None]
    if bad:
        ax.plot([s.tau for s in bad], [s.bpp for s in bad], "rx", ms=12, mew=3, label=VIOLATION)
    ax.set(xlabel="tau (max absolute error)", ylabel="bits per pixel", title="Rate vs error bound")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_psnr_vs_bpp(summary: Sequence[Summary], path: str | Path) -> Path:
    """PSNR against bpp for all lossy points (lossless points have PSNR = ∞ and are left out)."""
    fig, ax = _figure()
    for codec in dict.fromkeys(s.codec for s in summary):
        pts = sorted(
            (s for s in summary if s.codec == codec and s.psnr is not None and math.isfinite(s.psnr)),
            key=lambda s: s.bpp,
        )
        if pts:
            style = "o-" if pts[0].bounded else "s--"
            ax.plot([s.bpp for s in pts], [s.psnr for s in pts], style, label=pts[0].label, **_style(codec))
    bad = [s for s in summary if s.violations and s.psnr is not None and math.isfinite(s.psnr)]
    if bad:
        ax.plot([s.bpp for s in bad], [s.psnr for s in bad], "rx", ms=12, mew=3, label=VIOLATION)
    ax.set(xlabel="bits per pixel", ylabel="PSNR (dB)", title="PSNR vs rate (lossless points omitted)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    return Path(path)


def compressai_json(summary: Sequence[Summary], codec: str, description: str = "") -> dict:
    """CompressAI results-JSON (as written by ``compressai.utils.eval_model``) for one codec.

    ``{"name", "description", "results": {"bpp": [...], "psnr-rgb": [...], ...}}`` with one entry
    per operating point, sorted by bpp; extra keys ``tau``/``distance`` and ``max-err``.
    ``psnr-rgb`` is ``null`` for lossless points.  Times are mean seconds per image.
    """
    pts = sorted((s for s in summary if s.codec == codec and s.bpp is not None), key=lambda s: s.bpp)
    key = "tau" if all(s.distance is None for s in pts) else "distance"

    def finite(x: float | None) -> float | None:
        return None if x is None or math.isinf(x) else x

    return {
        "name": codec,
        "description": description or (pts[0].label if pts else codec),
        "results": {
            key: [s.tau if key == "tau" else s.distance for s in pts],
            "bpp": [s.bpp for s in pts],
            "psnr-rgb": [finite(s.psnr) for s in pts],
            "max-err": [s.max_err for s in pts],
            "encoding_time": [s.enc_s for s in pts],
            "decoding_time": [s.dec_s for s in pts],
        },
    }


def write_reports(summary: Sequence[Summary], out_dir: str | Path, title: str = "nlic bench") -> list[Path]:
    """Write results.md, both plots and ``compressai_<codec>.json`` for multi-point codecs."""
    out = Path(out_dir)
    md = out / "results.md"
    md.write_text(markdown(summary, title))
    paths = [
        md,
        plot_bpp_vs_tau(summary, out / "bpp_vs_tau.png"),
        plot_psnr_vs_bpp(summary, out / "psnr_vs_bpp.png"),
    ]
    for codec in dict.fromkeys(s.codec for s in summary):
        if codec == "nlic" or sum(s.codec == codec for s in summary) > 1:
            path = out / f"compressai_{codec}.json"
            label = next(s.label for s in summary if s.codec == codec)
            doc = compressai_json(summary, codec, f"{label}; {title}")
            path.write_text(json.dumps(doc, indent=2) + "\n")
            paths.append(path)
    return paths


def log_wandb(summary: Sequence[Summary], out_dir: str | Path, project: str = "nlic-bench") -> None:
    """Log the table and plots to Weights & Biases (offline unless WANDB_MODE says otherwise)."""
    import wandb

    out = Path(out_dir)
    run = wandb.init(project=project, dir=str(out), job_type="bench", mode=os.environ.get("WANDB_MODE", "offline"))
    columns = ["codec", "tau", "distance", *TABLE_HEADER, "status"]
    data = [[s.codec, s.tau, s.distance, *table_cells(s), s.status] for s in summary]
    run.log(
        {
            "bench/table": wandb.Table(columns=columns, data=data),
            "bench/bpp_vs_tau": wandb.Image(str(out / "bpp_vs_tau.png")),
            "bench/psnr_vs_bpp": wandb.Image(str(out / "psnr_vs_bpp.png")),
        }
    )
    run.finish()
