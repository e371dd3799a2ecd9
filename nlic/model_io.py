"""Saving and loading trained models: a plain config + weights, loaded with ``weights_only``.

Two file kinds load: an exported model (``nlic export`` / :func:`save_model`) and a Lightning
checkpoint written by ``nlic-train``.  Nothing is unpickled beyond tensors and plain containers.
"""

from __future__ import annotations

import hashlib
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
_RESIZABLE = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


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
        if key.endswith(_RESIZABLE) and key in buffers and buffers[key].shape != value.shape:
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


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"model path is a directory, not a file: {path}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelError(f"cannot read model file {path}: not an nlic model or checkpoint ({type(err).__name__})") from None


def load_model(path: str | Path) -> tuple[NearLosslessCodec, dict, bytes]:
    """Load a model or Lightning checkpoint; returns ``(codec in eval mode, config, model_id)``."""
    path = Path(path)
    blob = _read(path)
    if not isinstance(blob, dict):
        raise ModelError(f"{path} is not an nlic model file")
    if blob.get("format") == MODEL_FORMAT:
        if blob.get("format_version", 0) > MODEL_FORMAT_VERSION:
            raise ModelError(f"{path} was written by a newer nlic (model format {blob['format_version']})")
        config, state = blob["config"], blob["state_dict"]
    elif "state_dict" in blob and "model_config" in blob.get("hyper_parameters", {}):
        config = blob["hyper_parameters"]["model_config"]
        state = {k[len("codec.") :]: v for k, v in blob["state_dict"].items() if k.startswith("codec.")}
    else:
        raise ModelError(f"{path} is neither an nlic model nor an nlic-train checkpoint")
    try:
        codec = build_codec(config)
        state = {k: v.float() if v.dtype == torch.float16 else v for k, v in state.items()}
        load_codec_state(codec, state)
    except Exception as err:
        raise ModelError(f"{path} does not match this nlic's architecture: {err}".splitlines()[0]) from None
    codec.eval()
    codec.lossy.update(force=True)
    # the id covers what the decoder computes with: the loaded (and updated) weights
    return codec, config, model_id(config, codec.state_dict())
