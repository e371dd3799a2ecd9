"""Rate-distortion curves of lossy codecs by real coding: bpp of the real bytes, PSNR of the 8-bit output.

One *point* is one codec at one setting (a JPEG quality, a JPEG-XL distance, a flow model's
quantization step Δ, or one fixed-rate model file); each point codes every image and is scored
by the mean bpp and mean PSNR over images.  A curve is the points of one codec (one flow model
gives a whole curve; fixed-rate models give one point each).
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
from nlic.eval.metrics import psnr_db
from nlic.studies.codecs import StudyCodec
from nlic.utils.figures import pyplot, save_figure

#: columns of the per-image table
IMAGE_COLUMNS = ("codec", "setting", "image", "bpp", "psnr", "max_err")
#: columns of the per-point table
POINT_COLUMNS = ("codec", "setting", "images", "bpp", "psnr")


@dataclass
class ImageResult:
    codec: str
    setting: str
    image: str
    bpp: float
    psnr: float
    max_err: int


@dataclass
class RDPoint:
    codec: str
    setting: str
    images: int
    bpp: float
    psnr: float


def parse_points(items: Iterable[str]) -> dict[str, list[float]]:
    """``["jpeg=50,70,90", "flow=0.01,0.02"]`` -> ``{"jpeg": [50, 70, 90], "flow": [0.01, 0.02]}``."""
    out: dict[str, list[float]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or not name or not values.strip():
            raise NlicError(f"--points expects CODEC=V1,V2,..., got {item!r}")
        try:
            out.setdefault(name, []).extend(float(v) for v in values.split(",") if v.strip())
        except ValueError:
            raise NlicError(f"--points {name}: not a list of numbers: {values!r}") from None
    return out


def measure(
    images: list[tuple[str, np.ndarray]],
    codecs: Iterable[StudyCodec],
    progress: Callable[[RDPoint], None] | None = None,
) -> tuple[list[ImageResult], list[RDPoint]]:
    """Code every image with every codec; per-image rows and per-codec means (the RD points)."""
    if not images:
        raise NlicError("no images to code")
    rows: list[ImageResult] = []
    points: list[RDPoint] = []
    for codec in codecs:
        mine = []
        for name, img in images:
            decoded, nbytes = codec.roundtrip(img)
            if decoded.shape != img.shape or decoded.dtype != np.uint8:
                raise RuntimeError(f"{codec.name} returned {decoded.shape} {decoded.dtype} for {img.shape}")
            err = int(np.abs(decoded.astype(np.int16) - img.astype(np.int16)).max())
            h, w = img.shape[:2]
            mine.append(ImageResult(codec.name, codec.setting, name, 8.0 * nbytes / (h * w),
                                    psnr_db(img, decoded), err))
        rows.extend(mine)
        finite = [r.psnr for r in mine if math.isfinite(r.psnr)]
        point = RDPoint(codec.name, codec.setting, len(mine), float(np.mean([r.bpp for r in mine])),
                        float(np.mean(finite)) if finite else math.inf)
        points.append(point)
        if progress is not None:
            progress(point)
    return rows, points


def markdown_table(points: Iterable[RDPoint]) -> str:
    lines = ["| codec | setting | images | bpp | PSNR (dB) |", "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {p.codec} | {p.setting} | {p.images} | {p.bpp:.4f} | {p.psnr:.2f} |" for p in points]
    return "\n".join(lines) + "\n"


def write_tables(rows: list[ImageResult], points: list[RDPoint], out_dir: str | os.PathLike) -> list[Path]:
    """``rd_images.csv`` (per image), ``rd.csv`` and ``rd.md`` (per point) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "rd_images.csv", out / "rd.csv", out / "rd.md"]
    for path, items, columns in ((paths[0], rows, IMAGE_COLUMNS), (paths[1], points, POINT_COLUMNS)):
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(asdict(i) for i in items)
    paths[2].write_text(markdown_table(points))
    return paths


def curves(points: Iterable[RDPoint]) -> dict[str, list[RDPoint]]:
    """Points grouped by codec, each curve sorted by rate."""
    out: dict[str, list[RDPoint]] = {}
    for p in points:
        out.setdefault(p.codec, []).append(p)
    return {k: sorted(v, key=lambda p: p.bpp) for k, v in out.items()}


def plot_curves(points: list[RDPoint], path: str | os.PathLike, title: str = "") -> Path:
    """PSNR (8-bit output) versus bpp, one line per codec."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for codec, pts in curves(points).items():
        ax.plot([p.bpp for p in pts], [p.psnr for p in pts], "o-", label=codec)
    ax.set(xlabel="bits per pixel", ylabel="PSNR (dB, 8-bit output)", title=title or "rate-distortion")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def log_to_wandb(points: list[RDPoint], plot_path: str | os.PathLike, out_dir: str | os.PathLike,
                 config: Mapping[str, Any], project: str = "nlic", group: str | None = None) -> None:
    """The RD table, one ``rd/<codec>/psnr`` series against ``rd/bpp`` per codec, and the plot."""
    os.environ.setdefault("WANDB_MODE", "offline")
    import wandb

    run = wandb.init(project=project, group=group, job_type="rd_curve", dir=str(out_dir), config=dict(config))
    try:
        table = wandb.Table(columns=list(POINT_COLUMNS), data=[list(asdict(p).values()) for p in points])
        run.log({"rd/table": table, "rd/plot": wandb.Image(str(plot_path))})
        for codec, pts in curves(points).items():
            run.log({f"rd/{codec}": wandb.plot.line(
                wandb.Table(columns=["bpp", "psnr"], data=[[p.bpp, p.psnr] for p in pts]),
                "bpp", "psnr", title=f"{codec}: PSNR vs bpp")})
    finally:
        run.finish()


__all__ = [
    "IMAGE_COLUMNS", "POINT_COLUMNS", "ImageResult", "RDPoint", "curves", "log_to_wandb", "markdown_table",
    "measure", "parse_points", "plot_curves", "write_tables",
]
