"""Saving and loading trained models: a plain config + weights, loaded with ``weights_only``.

Two file kinds load: an exported model (``nlic export`` / :func:`save_model`) and a Lightning
checkpoint written by ``nlic-train``.  Nothing is unpickled beyond tensors and plain containers.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import nlic
from nlic.errors import ModelError
from nlic.system import NearLosslessCodec

MODEL_FORMAT = "nlic-model"
MODEL_FORMAT_VERSION = 1
#: buffers of CompressAI entropy models whose size is only known after ``update()``
CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def build_codec(config: dict) -> NearLosslessCodec:
    """Instantiate a codec from ``{"lossy": {...}, "residual": {...}}`` (``_target_`` configs)."""
    cfg = OmegaConf.create(config)
    lossy = instantiate(cfg.lossy)
    residual = instantiate(cfg.residual)
    return NearLosslessCodec(lossy, residual)


def load_codec_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """``load_state_dict`` that first resizes CompressAI's CDF buffers to the stored shapes."""
    buffers = dict(model.named_buffers())
    for key, value in state_dict.items():
        if key.endswith(CDF_BUFFERS) and key in buffers and buffers[key].shape != value.shape:
            buffers[key].resize_(value.shape)
    model.load_state_dict(state_dict, strict=True)


def model_id(config: dict, state_dict: dict[str, torch.Tensor]) -> bytes:
    """8-byte fingerprint of a model's architecture and weights (stored in every .nlic file)."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.digest()[:8]


def save_model(codec: NearLosslessCodec, config: dict, path: str | Path, meta: dict | None = None,
               half: bool = False) -> None:
    """Export ``codec`` (CDF tables updated) with its config; ``half`` stores fp16 weights."""
    codec.lossy.update(force=True)
    state = {k: v.detach().cpu() for k, v in codec.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save(
        {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "nlic_version": nlic.__version__,
            "config": config,
            "meta": meta or {},
            "state_dict": state,
        },
        str(path),
    )


def read_model_file(path: Path) -> Any:
    """The contents of a model or checkpoint file (tensors and plain containers only)."""
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"model path is a directory, not a file: {path}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelError(
            f"cannot read model file {path}: not an nlic model or checkpoint ({type(err).__name__})"
        ) from None


def checkpoint_codec_state(state_dict: dict) -> dict:
    """The codec's weights in an ``nlic-train`` Lightning checkpoint (its keys under ``codec.``)."""
    return {k[len("codec.") :]: v for k, v in state_dict.items() if isinstance(k, str) and k.startswith("codec.")}


#: modules a model file's config may name in ``_target_`` (the codec building blocks)
ALLOWED_TARGET_PREFIXES = ("nlic.codecs.", "nlic.residual.")


def _allowed_target(target: Any) -> bool:
    """An ``nn.Module`` class defined in nlic's codec modules (the name alone is not enough:
    ``nlic.codecs.flow.os.system`` also starts with ``nlic.codecs.``)."""
    if not (isinstance(target, str) and target.startswith(ALLOWED_TARGET_PREFIXES)):
        return False
    parts = target.split(".")
    for i in range(len(parts) - 1, 1, -1):  # the longest importable module prefix, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        module = getattr(obj, "__module__", "") or ""
        return isinstance(obj, type) and issubclass(obj, torch.nn.Module) and (
            f"{module}.".startswith(ALLOWED_TARGET_PREFIXES)
        )
    return False


def check_targets(config: Any, path: Path) -> None:
    """Refuse configs that would make ``instantiate`` call anything but nlic's codec classes.

    ``weights_only`` keeps ``torch.load`` from running code, but the stored config is handed to
    Hydra's ``instantiate``, which calls whatever ``_target_`` names (``os.system`` included).
    """
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "_target_":
                if not _allowed_target(value):
                    raise ModelError(f"{path}: refusing model config with _target_ {value!r} "
                                     f"(only classes from {', '.join(ALLOWED_TARGET_PREFIXES)} are allowed)")
            else:
                check_targets(value, path)
    elif isinstance(config, (list, tuple)):
        for value in config:
            check_targets(value, path)


def load_model(path: str | Path) -> tuple[NearLosslessCodec, dict, bytes]:
    """Load a model or Lightning checkpoint; returns ``(codec in eval mode, config, model_id)``."""
    path = Path(path)
    blob = read_model_file(path)
    if not isinstance(blob, dict):
        raise ModelError(f"{path} is not an nlic model file")
    hparams = blob.get("hyper_parameters")
    if blob.get("format") == MODEL_FORMAT:
        version = blob.get("format_version", 0)
        if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
            raise ModelError(f"{path} was written by a newer nlic (model format {version!r}, this nlic reads "
                             f"up to {MODEL_FORMAT_VERSION}); upgrade nlic")
        config, state = blob.get("config"), blob.get("state_dict")
    elif isinstance(blob.get("state_dict"), dict) and isinstance(hparams, dict) and "model_config" in hparams:
        config = hparams["model_config"]
        state = checkpoint_codec_state(blob["state_dict"])
    else:
        raise ModelError(f"{path} is neither an nlic model nor an nlic-train checkpoint")
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise ModelError(f"{path} is not a valid nlic model file (bad config or weights)")
    check_targets(config, path)
    try:
        codec = build_codec(config)
        state = {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}
        load_codec_state(codec, state)
    except Exception as err:
        detail = " ".join(str(err).split())
        detail = detail if len(detail) <= 300 else detail[:297] + "..."
        raise ModelError(f"{path} does not match this nlic's architecture ({type(err).__name__}: {detail})") from None
    codec.eval()
    codec.lossy.update(force=True)
    # the id covers what the decoder computes with: the loaded (and updated) weights
    return codec, config, model_id(config, codec.state_dict())
