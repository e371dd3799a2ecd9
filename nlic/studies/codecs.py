"""The codecs a study compares, each at one setting, behind one interface (:class:`StudyCodec`).

Classic codecs go through their real bitstreams (JPEG via Pillow, JPEG-XL via imagecodecs);
learned lossy codecs through ``compress_latents`` -> bytes (:func:`nlic.eval.lossy.compress_image`)
-> ``decompress_latents`` -> 8-bit image.  Learned codecs load from the lossy-only model files
that ``nlic-train experiment=lossy_only`` exports (``lossy_model.pt``).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from nlic.codecs.base import LossyCodec
from nlic.errors import NlicError

#: codecs that are not learned (no model file)
CLASSIC_CODECS = ("jpeg", "jpegxl")
#: default setting per codec when none is given
DEFAULT_QUALITY: dict[str, float] = {"jpeg": 90, "jpegxl": 1.0}


def lossy_config(name: str, feature_channels: int = 32, **overrides: Any) -> dict:
    """Plain, resolved config of ``conf/lossy/<name>.yaml`` (``${feature_channels}`` filled in)."""
    from omegaconf import OmegaConf

    from nlic.project import config_dir

    file = Path(config_dir()) / "lossy" / f"{name}.yaml"
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
    """A :class:`LossyCodec` through its real bitstream; ``delta`` sets a flow codec's step.

    ``label`` tells apart several models of one codec (e.g. one per lambda); default ``name``.
    """

    def __init__(self, name: str, model: LossyCodec, delta: float | None = None, label: str | None = None) -> None:
        self.name, self.model = name, model.eval()
        if delta is not None:
            if not hasattr(model, "delta"):
                raise NlicError(f"codec {name!r} has no quality setting (a fixed-rate model)")
            if not (math.isfinite(delta) and delta > 0):
                raise NlicError(f"{name}: the quantization step must be > 0, got {delta}")
            model.delta = float(delta)
        self.setting = f"delta={model.delta:g}" if hasattr(model, "delta") else (label or "model")
        model.update(force=True)

    @torch.no_grad()
    def roundtrip(self, img: np.ndarray) -> tuple[np.ndarray, int]:
        from nlic.eval.lossy import compress_image, decompress_image

        data = compress_image(self.model, np.ascontiguousarray(img, dtype=np.uint8))
        return decompress_image(self.model, data), len(data)


def load_lossy_codec(path: str | os.PathLike) -> LossyCodec:
    """A trained lossy codec from its ``lossy_model.pt`` (eval mode, CDF tables ready)."""
    from nlic.eval.lossy import load_lossy_model

    return load_lossy_model(path)[0]


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
    """Build the study codecs; a learned codec needs a model file unless ``allow_untrained``."""
    names = list(names)
    unknown = set(qualities) - set(names)
    if unknown:
        raise NlicError(f"--quality names codecs not in --codecs: {', '.join(sorted(unknown))}")
    return [make_codec(name, qualities.get(name), checkpoints.get(name), allow_untrained, feature_channels)
            for name in names]


def make_codec(
    name: str,
    setting: float | None = None,
    model_path: str | os.PathLike | None = None,
    allow_untrained: bool = False,
    feature_channels: int = 32,
    label: str | None = None,
) -> StudyCodec:
    """One codec at one setting: ``jpeg`` (quality), ``jpegxl`` (distance) or a ``conf/lossy`` name
    (``setting`` = quantization step of a flow model; fixed-rate models take none)."""
    if name == "jpeg":
        return JpegCodec(DEFAULT_QUALITY["jpeg"] if setting is None else setting)
    if name == "jpegxl":
        return JpegXLCodec(DEFAULT_QUALITY["jpegxl"] if setting is None else setting)
    if model_path is not None:
        model = load_lossy_codec(model_path)
    elif allow_untrained:
        model = build_lossy_codec(name, feature_channels)
    else:
        raise NlicError(
            f"codec {name!r} needs a trained model (--{name.replace('_', '-')}-model FILE "
            f"or --model {name}=FILE, a lossy_model.pt); pass --allow-untrained to use random weights"
        )
    return LearnedCodec(name, model, setting, label)


__all__ = [
    "CLASSIC_CODECS", "DEFAULT_QUALITY", "JpegCodec", "JpegXLCodec", "LearnedCodec", "StudyCodec",
    "build_lossy_codec", "load_lossy_codec", "lossy_config", "make_codec", "make_codecs", "parse_qualities",
]
