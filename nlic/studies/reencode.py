"""Re-encoding (generation-loss) study: decode -> re-encode N times with the same setting.

Generation ``g`` codes the 8-bit decoded image of generation ``g - 1`` (generation 0 = the
original) and is scored by PSNR to the ORIGINAL, PSNR to the previous generation and bpp.
The codecs (:mod:`nlic.studies.codecs`) go through their real bitstreams, with 8-bit rounding
between generations.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlic.errors import NlicError
from nlic.eval.metrics import psnr_db as psnr
from nlic.studies.codecs import StudyCodec
from nlic.utils.figures import pyplot, save_figure

#: columns of the per-generation table
COLUMNS = ("generation", "codec", "setting", "psnr", "psnr_prev", "bpp", "bytes")


# --------------------------------------------------------------------------------------------
# the study
# --------------------------------------------------------------------------------------------


@dataclass
class GenerationResult:
    generation: int
    codec: str
    setting: str
    psnr: float
    psnr_prev: float
    bpp: float
    bytes: int


def run_study(
    image: np.ndarray,
    codecs: Iterable[StudyCodec],
    generations: int,
    progress: Callable[[GenerationResult], None] | None = None,
) -> list[GenerationResult]:
    """Code ``image`` ``generations`` times per codec, each time from the previous decoding."""
    if generations < 1:
        raise NlicError("--generations must be >= 1")
    h, w = image.shape[:2]
    results: list[GenerationResult] = []
    for codec in codecs:
        current = image
        for g in range(1, generations + 1):
            decoded, nbytes = codec.roundtrip(current)
            if decoded.shape != image.shape or decoded.dtype != np.uint8:
                raise RuntimeError(f"{codec.name} returned {decoded.shape} {decoded.dtype}")
            res = GenerationResult(
                g, codec.name, codec.setting, psnr(image, decoded), psnr(current, decoded),
                8.0 * nbytes / (h * w), nbytes,
            )
            results.append(res)
            if progress is not None:
                progress(res)
            current = decoded
    return results


def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.3f}"


def markdown_table(results: Iterable[GenerationResult]) -> str:
    lines = [
        "| generation | codec | setting | PSNR (dB) | PSNR to previous (dB) | bpp | bytes |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r.generation} | {r.codec} | {r.setting} | {_fmt(r.psnr)} | {_fmt(r.psnr_prev)} "
            f"| {r.bpp:.4f} | {r.bytes} |"
        )
    return "\n".join(lines) + "\n"


def write_tables(results: list[GenerationResult], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``reencode.csv`` and ``reencode.md`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "reencode.csv", out / "reencode.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        for r in results:
            writer.writerow(asdict(r))
    md_path.write_text(markdown_table(results))
    return csv_path, md_path


def plot_results(results: list[GenerationResult], path: str | os.PathLike, title: str = "") -> Path:
    """PSNR to the original (left) and bpp (right) versus generation, one line per codec."""
    plt = pyplot()
    fig, (ax_p, ax_r) = plt.subplots(1, 2, figsize=(10, 4))
    series: dict[str, list[GenerationResult]] = {}
    for r in results:
        series.setdefault(f"{r.codec} ({r.setting})", []).append(r)
    for label, rs in series.items():
        gens = [r.generation for r in rs]
        ax_p.plot(gens, [r.psnr if math.isfinite(r.psnr) else math.nan for r in rs], "o-", label=label)
        ax_r.plot(gens, [r.bpp for r in rs], "o-", label=label)
    ax_p.set(xlabel="generation", ylabel="PSNR to original (dB)", title="quality over generations")
    ax_r.set(xlabel="generation", ylabel="bpp", title="rate over generations")
    for ax in (ax_p, ax_r):
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_p.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def log_to_wandb(
    results: list[GenerationResult],
    plot_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: Mapping[str, Any],
    project: str = "nlic",
    group: str | None = None,
) -> None:
    """Log the table, per-generation curves and the plot to W&B (offline unless WANDB_MODE says)."""
    os.environ.setdefault("WANDB_MODE", "offline")
    import wandb

    run = wandb.init(
        project=project, group=group, job_type="reencode", dir=str(out_dir), config=dict(config),
    )
    try:
        run.define_metric("generation")
        run.define_metric("reencode/*", step_metric="generation")
        for g in sorted({r.generation for r in results}):
            row: dict[str, Any] = {"generation": g}
            for r in results:
                if r.generation == g:
                    row[f"reencode/{r.codec}/psnr"] = r.psnr if math.isfinite(r.psnr) else None
                    row[f"reencode/{r.codec}/bpp"] = r.bpp
            run.log(row)
        table = wandb.Table(
            columns=list(COLUMNS),
            # a fixed point has psnr_prev = inf: None keeps the column numeric for W&B's type check
            data=[[None if isinstance(v, float) and math.isinf(v) else v for v in asdict(r).values()]
                  for r in results],
        )
        run.log({"reencode/table": table, "reencode/plot": wandb.Image(str(plot_path))})
        for r in results:
            run.summary[f"{r.codec}/psnr_gen{r.generation}"] = _fmt(r.psnr)
    finally:
        run.finish()


__all__ = [
    "COLUMNS", "GenerationResult", "log_to_wandb", "markdown_table", "plot_results", "run_study", "write_tables",
]
