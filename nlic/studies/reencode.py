"""Re-encoding (generation-loss) study: decode -> re-encode N times with the same setting.

Generation ``g`` codes the 8-bit decoded image of generation ``g - 1`` (generation 0 = the
original) and is scored by PSNR to the ORIGINAL, PSNR to the previous generation and bpp.
Classic codecs (JPEG via Pillow, JPEG-XL via imagecodecs) go through their real bitstreams;
learned lossy codecs go through their own ``compress_latents`` -> bytes -> ``decompress_latents``
with 8-bit rounding between generations.

Also home of the lossy-codec checkpoint format used by studies and tools::

    torch.save({"config": {"_target_": ..., <constructor args>}, "state_dict": ...}, path)

(:func:`save_lossy_codec` / :func:`load_lossy_codec`; loaded with ``weights_only=True``).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from nlic.codecs.base import LatentPayload, LossyCodec
from nlic.errors import ImageError, ModelError, NlicError
from nlic.eval.metrics import psnr_db as psnr
from nlic.model_io import check_targets

#: codecs that are not learned (no checkpoint)
CLASSIC_CODECS = ("jpeg", "jpegxl")
#: default setting per codec when --quality does not name it
DEFAULT_QUALITY: dict[str, float] = {"jpeg": 90, "jpegxl": 1.0}
#: columns of the per-generation table
COLUMNS = ("generation", "codec", "setting", "psnr", "psnr_prev", "bpp", "bytes")


# --------------------------------------------------------------------------------------------
# checkpoints of lossy codecs
# --------------------------------------------------------------------------------------------


def _plain_config(config: Any) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - hydra is a dependency
        DictConfig = ()  # type: ignore[assignment]
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise ValueError("a lossy-codec config must be a mapping with a _target_")
    return dict(config)


def save_lossy_codec(model: LossyCodec, config: Any, path: str | os.PathLike) -> None:
    """Save ``model`` with its (resolved, plain) lossy YAML config, including ``_target_``.

    Call ``model.update(force=True)`` first if the CDF tables should travel with the weights.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": _plain_config(config), "state_dict": model.state_dict()}, path)


def load_lossy_codec(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> LossyCodec:
    """Instantiate the codec named by a checkpoint's config and load its weights (eval mode).

    Uses the codec's own (CompressAI) ``load_state_dict``, which resizes the entropy models' CDF
    buffers to the saved ones.  Raises :class:`nlic.errors.ModelError` on any problem.
    """
    import hydra.utils

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ModelError(f"cannot read model file {path}: {err}") from err
    if not isinstance(ckpt, Mapping) or "config" not in ckpt or "state_dict" not in ckpt:
        raise ModelError(f"{path} is not a lossy-codec checkpoint (needs 'config' and 'state_dict')")
    config = ckpt["config"]
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise ModelError(f"{path}: checkpoint config has no _target_")
    check_targets(dict(config), Path(path))  # the config must not make instantiate run arbitrary code
    try:
        model = hydra.utils.instantiate(dict(config))
    except Exception as err:
        raise ModelError(f"{path}: cannot build {config['_target_']}: {err}") from err
    if not isinstance(model, LossyCodec):
        raise ModelError(f"{path}: {config['_target_']} is not a LossyCodec")
    try:
        model.load_state_dict(ckpt["state_dict"])  # CompressionModel's: resizes CDF buffers
    except (RuntimeError, KeyError) as err:
        raise ModelError(f"{path}: weights do not fit {config['_target_']}: {err}") from err
    return model.to(map_location).eval()


def conf_dir() -> Path:
    """The Hydra config tree (``conf/`` next to the package, or packaged ``nlic/conf``)."""
    here = Path(__file__).resolve()
    for cand in (here.parents[2] / "conf", here.parents[1] / "conf"):
        if (cand / "lossy").is_dir():
            return cand
    raise NlicError("cannot find the config tree (conf/lossy)")


def lossy_config(name: str, feature_channels: int = 32, **overrides: Any) -> dict:
    """Plain, resolved config of ``conf/lossy/<name>.yaml`` (``${feature_channels}`` filled in)."""
    from omegaconf import OmegaConf

    file = conf_dir() / "lossy" / f"{name}.yaml"
    if not file.is_file():
        raise NlicError(f"unknown lossy codec {name!r} (no {file})")
    root = OmegaConf.create({"feature_channels": feature_channels, "lossy": OmegaConf.load(file)})
    cfg = OmegaConf.to_container(root.lossy, resolve=True)
    assert isinstance(cfg, dict)
    cfg.update(overrides)
    return cfg


def build_lossy_codec(name: str, feature_channels: int = 32, **overrides: Any) -> LossyCodec:
    """A freshly initialised codec from ``conf/lossy/<name>.yaml`` (smoke tests, training start)."""
    import hydra.utils

    model = hydra.utils.instantiate(lossy_config(name, feature_channels, **overrides))
    if not isinstance(model, LossyCodec):
        raise NlicError(f"conf/lossy/{name}.yaml does not build a LossyCodec")
    return model


# --------------------------------------------------------------------------------------------
# codecs under study
# --------------------------------------------------------------------------------------------


class StudyCodec(Protocol):
    """One codec at one setting: ``roundtrip`` codes an 8-bit RGB image, returns (decoded, bytes)."""

    name: str
    setting: str

    def roundtrip(self, img: np.ndarray) -> tuple[np.ndarray, int]: ...


class JpegCodec:
    """Baseline JPEG through Pillow (``quality`` 1..100, Pillow's default 4:2:0 subsampling)."""

    def __init__(self, quality: float = 90) -> None:
        q = int(quality)
        if q != quality or not 1 <= q <= 100:
            raise NlicError(f"JPEG quality must be an integer in 1..100, got {quality}")
        self.name, self.quality, self.setting = "jpeg", q, f"q={q}"

    def roundtrip(self, img: np.ndarray) -> tuple[np.ndarray, int]:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=self.quality)
        data = buf.getvalue()
        with Image.open(io.BytesIO(data)) as dec:
            out = np.asarray(dec.convert("RGB"))
        return out, len(data)


class JpegXLCodec:
    """Lossy JPEG-XL through imagecodecs (Butteraugli ``distance``, 0 < d <= 25)."""

    def __init__(self, distance: float = 1.0) -> None:
        import imagecodecs

        if not getattr(imagecodecs, "JPEGXL", None) or not imagecodecs.JPEGXL.available:
            raise NlicError("this imagecodecs build has no JPEG-XL support")
        if not 0 < distance <= 25:
            raise NlicError(f"JPEG-XL distance must be in (0, 25], got {distance}")
        self.name, self.distance, self.setting = "jpegxl", float(distance), f"d={distance:g}"

    def roundtrip(self, img: np.ndarray) -> tuple[np.ndarray, int]:
        import imagecodecs

        data = imagecodecs.jpegxl_encode(img, distance=self.distance)
        out = imagecodecs.jpegxl_decode(data)
        return np.asarray(out, dtype=np.uint8)[..., :3], len(data)


class LearnedCodec:
    """A :class:`LossyCodec` through its real bitstream; ``delta`` sets a flow codec's step."""

    def __init__(self, name: str, model: LossyCodec, delta: float | None = None) -> None:
        self.name, self.model = name, model.eval()
        if delta is not None:
            if not hasattr(model, "delta"):
                raise NlicError(f"codec {name!r} has no quality setting (a fixed-rate model)")
            if not (math.isfinite(delta) and delta > 0):
                raise NlicError(f"{name}: the quantization step must be > 0, got {delta}")
            model.delta = float(delta)
        self.setting = f"delta={model.delta:g}" if hasattr(model, "delta") else "model"
        model.update(force=True)

    @torch.no_grad()
    def roundtrip(self, img: np.ndarray) -> tuple[np.ndarray, int]:
        h, w = img.shape[:2]
        x = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float().div(255.0)
        m = int(self.model.pad_multiple)
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        payload = self.model.compress_latents(x)
        strings = [bytes(s) for s in payload.strings]
        out = self.model.decompress_latents(LatentPayload(strings, [int(v) for v in payload.shape]))
        x_hat = out["x_hat"][0, :, :h, :w].clamp(0, 1).mul(255).round().to(torch.uint8)
        return x_hat.permute(1, 2, 0).contiguous().numpy(), sum(len(s) for s in strings)


def parse_qualities(items: Iterable[str]) -> dict[str, float]:
    """``["jpeg=75,jpegxl=1.5", "flow=0.01"]`` -> ``{"jpeg": 75.0, "jpegxl": 1.5, "flow": 0.01}``."""
    out: dict[str, float] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep:
                raise NlicError(f"--quality expects CODEC=VALUE, got {part!r}")
            try:
                out[name.strip()] = float(value)
            except ValueError:
                raise NlicError(f"--quality {name}: not a number: {value!r}") from None
    return out


def make_codecs(
    names: Iterable[str],
    qualities: Mapping[str, float],
    checkpoints: Mapping[str, str | os.PathLike | None],
    allow_untrained: bool = False,
    feature_channels: int = 32,
) -> list[StudyCodec]:
    """Build the study codecs; a learned codec needs a checkpoint unless ``allow_untrained``."""
    names = list(names)
    unknown = set(qualities) - set(names)
    if unknown:
        raise NlicError(f"--quality names codecs not in --codecs: {', '.join(sorted(unknown))}")
    codecs: list[StudyCodec] = []
    for name in names:
        if name == "jpeg":
            codecs.append(JpegCodec(qualities.get(name, DEFAULT_QUALITY["jpeg"])))
        elif name == "jpegxl":
            codecs.append(JpegXLCodec(qualities.get(name, DEFAULT_QUALITY["jpegxl"])))
        else:
            ckpt = checkpoints.get(name)
            if ckpt is not None:
                model = load_lossy_codec(ckpt)
            elif allow_untrained:
                model = build_lossy_codec(name, feature_channels)
            else:
                raise NlicError(
                    f"codec {name!r} needs a trained model (--{name.replace('_', '-')}-model CKPT "
                    f"or --model {name}=CKPT); pass --allow-untrained to use random weights"
                )
            codecs.append(LearnedCodec(name, model, qualities.get(name)))
    return codecs


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


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as ``H x W x 3`` uint8 RGB (other modes converted)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise ImageError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ImageError(f"cannot read image {path}: {err}") from err
    return np.ascontiguousarray(img, dtype=np.uint8)


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
            data=[[_fmt(v) if isinstance(v, float) and math.isinf(v) else v for v in asdict(r).values()]
                  for r in results],
        )
        run.log({"reencode/table": table, "reencode/plot": wandb.Image(str(plot_path))})
        for r in results:
            run.summary[f"{r.codec}/psnr_gen{r.generation}"] = _fmt(r.psnr)
    finally:
        run.finish()


__all__ = [
    "COLUMNS", "GenerationResult", "JpegCodec", "JpegXLCodec", "LearnedCodec", "StudyCodec",
    "build_lossy_codec", "conf_dir", "load_lossy_codec", "log_to_wandb", "lossy_config",
    "make_codecs", "markdown_table", "parse_qualities", "plot_results", "psnr", "read_image",
    "run_study", "save_lossy_codec", "write_tables",
]
