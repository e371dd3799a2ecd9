"""Saving and loading trained models: a plain config + weights, loaded with ``weights_only``.

Near-lossless models load from an exported model (``nlic export`` / :func:`save_model`) or a Lightning
checkpoint written by ``nlic-train``; lossy codecs trained alone from ``lossy_model.pt``
(:func:`save_lossy_model`).  Both file kinds are written by one writer and read with the same
checks: nothing is unpickled beyond tensors and plain containers, and a stored config may only name
nlic's codec classes (:func:`check_targets`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

import nlic
from nlic.codecs.base import LossyCodec
from nlic.errors import ModelError
from nlic.system import NearLosslessCodec

MODEL_FORMAT = "nlic-model"
#: 2: integer-network calibration ("quantization") stored beside the weights
MODEL_FORMAT_VERSION = 2
#: lossy codecs trained alone (``experiment=lossy_only``)
LOSSY_MODEL_FORMAT = "nlic-lossy-model"
LOSSY_MODEL_FORMAT_VERSION = 1
#: buffers of CompressAI entropy models whose size is only known after ``update()``
CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def build_codec(config: dict) -> NearLosslessCodec:
    """Instantiate a codec from ``{"lossy": {...}, "residual": {...}, "relax_lossy": bool}``
    (``_target_`` configs; ``relax_lossy`` only changes training, see NearLosslessCodec)."""
    cfg = OmegaConf.create(config)
    lossy = instantiate(cfg.lossy)
    residual = instantiate(cfg.residual)
    return NearLosslessCodec(lossy, residual, relax_lossy=bool(cfg.get("relax_lossy", False)))


def load_codec_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True) -> list[str]:
    """``load_state_dict`` that first resizes CompressAI's CDF buffers to the stored shapes; returns
    the model's keys missing from ``state_dict`` (none when ``strict``)."""
    buffers = dict(model.named_buffers())
    for key, value in state_dict.items():
        if key.endswith(CDF_BUFFERS) and key in buffers and buffers[key].shape != value.shape:
            buffers[key].resize_(value.shape)
    return model.load_state_dict(state_dict, strict=strict).missing_keys


@dataclass
class LoadedModel:
    """A model ready to code: the float codec, its config, the integer-network calibration
    (``quantization``, see :mod:`nlic.residual.integer`) and the fingerprint files name it by."""

    codec: NearLosslessCodec
    config: dict
    quantization: dict
    model_id: bytes
    path: Path


def model_id(config: dict, state_dict: dict[str, torch.Tensor], quantization: dict | None = None) -> bytes:
    """8-byte fingerprint of what decides a model's probabilities: architecture, weights and the
    integer-network calibration (stored in every .nlic file)."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    h.update(json.dumps(quantization or {}, sort_keys=True).encode())
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return h.digest()[:8]


@torch.no_grad()
def without_bias_correction(model: LoadedModel) -> LoadedModel:
    """The same model with its tau-conditioned head removed: every tau coded by the plain head from
    quantized context (DLPR's "bias correction off" ablation, on the very same trained weights)."""
    config = json.loads(json.dumps(model.config))
    config["residual"]["bias_correction"] = False
    codec = build_codec(config)
    state = {k: v for k, v in model.codec.state_dict().items() if not k.startswith("residual.tau_head.")}
    load_codec_state(codec, state)
    codec.eval()
    quantization = {k: v for k, v in model.quantization.items() if not k.startswith("tau")}  # keeps "format"
    return LoadedModel(codec, config, quantization, model_id(config, codec.state_dict(), quantization), model.path)


#: what a model without grey heads (a colour-only run's checkpoint) does differently, said by
#: ``nlic export`` and ``nlic bench``: its figures are not those of the model it would ship as
NO_GREY_HEADS = ("has no grey heads: grey images and the R plane of colour tiles (format 8) are coded by "
                 "its colour heads; `nlic export CKPT OUT --gray-heads MODEL` adds them (e.g. the shipped "
                 "default's)")


#: residual-network sizes in which grey heads may be smaller than the colour heads they join
GROWABLE_SIZES = ("context_channels", "hidden", "layers", "channel_hidden")


def with_gray_heads(model: LoadedModel, gray: LoadedModel) -> tuple[NearLosslessCodec, dict]:
    """``model`` with the heads of ``gray`` (same architecture, trained on grey crops; or smaller,
    then grown function-preservingly, :mod:`nlic.residual.widen`) as its grey heads: grey images
    are then coded by them, colour images exactly as before."""
    from nlic.residual.network import attach_gray_heads

    config = json.loads(json.dumps(model.config))
    residual = dict(config["residual"])
    gray_residual = dict(gray.config["residual"])
    for key in (residual, gray_residual):
        key.pop("gray_heads", None)
    # smaller grey heads are grown to the colour heads' sizes, computing what they computed
    smaller = all(gray_residual.get(k, 0) <= residual.get(k, 0) for k in GROWABLE_SIZES)
    for key in (residual, gray_residual):
        for size in GROWABLE_SIZES:
            key.pop(size, None)
    if residual != gray_residual or config["lossy"] != gray.config["lossy"] or not smaller:
        raise ModelError("the grey model's architecture differs from the colour model's (residual and lossy "
                         "configs must match; the grey heads may be smaller: "
                         f"{', '.join(GROWABLE_SIZES)})")
    config["residual"] = {**config["residual"], "gray_heads": True}
    codec = build_codec(config)
    missing = load_codec_state(codec, model.codec.state_dict(), strict=False)
    if any(not k.startswith("residual.gray_") for k in missing):
        raise ModelError(f"cannot carry the colour model's weights over: {missing[:3]}")
    attach_gray_heads(codec.residual, gray.codec.residual)
    return codec.eval(), config


@torch.no_grad()
def calibrate_codec(codec: NearLosslessCodec) -> dict:
    """Integer-network calibration of ``codec`` on the photos shipped in the package, in colour
    and in grey (see :func:`nlic.residual.integer.calibrate`)."""
    from nlic.data.datamodule import to_gray
    from nlic.data.images import load_folder
    from nlic.residual.integer import calibrate
    from nlic.system import lossy_to_uint8, pad_to_multiple

    residuals, features, gray = [], [], []
    for _, rgb in load_folder(None):
        for is_gray, img in ((False, rgb), (True, to_gray(rgb)[..., None].repeat(3, axis=2))):
            gray.append(is_gray)
            x = pad_to_multiple(torch.from_numpy(img).permute(2, 0, 1)[None].float(), codec.pad_multiple)
            out = codec.lossy(x / 255.0)
            residuals.append(x - lossy_to_uint8(out["x_hat"].float()))
            feats = out.get("features")
            features.append(feats if feats is not None and feats.shape[1] else None)
    return calibrate(codec.residual, residuals, features, gray=gray)


def _is_weight(key: str, value: torch.Tensor) -> bool:
    """A float tensor that may be stored in float16 (CompressAI's tables stay exact)."""
    return value.is_floating_point() and not key.endswith(CDF_BUFFERS)


def save_model(codec: NearLosslessCodec, config: dict, path: str | Path, meta: dict | None = None,
               half: bool = False) -> None:
    """Export ``codec`` (CDF tables updated, integer network calibrated) with its config;
    ``half`` stores fp16 weights (calibrated as stored)."""
    was_training = codec.training
    stored = codec
    if half:  # the weights as they will be loaded: rounded to float16
        state = {k: v.detach().cpu() for k, v in codec.state_dict().items()}
        stored = build_codec(config)
        load_codec_state(stored, {k: v.half().float() if _is_weight(k, v) else v for k, v in state.items()})
    stored.eval()
    # the CDF tables are computed once, here, in float, and stored: a loader never recomputes them
    # (they would differ with the CPU's kernels, and so would the model id)
    stored.lossy.update(force=True)
    state = {k: v.detach().cpu() for k, v in stored.state_dict().items()}
    if half:
        state = {k: v.half() if _is_weight(k, v) else v for k, v in state.items()}
    quantization = calibrate_codec(stored)
    codec.train(was_training)
    _write_model_file(path, MODEL_FORMAT, MODEL_FORMAT_VERSION, config, state, meta, quantization=quantization)


def save_lossy_model(codec: LossyCodec, config: dict, path: str | Path, meta: dict | None = None) -> None:
    """Export a lossy codec trained alone (CDF tables updated) with its ``{"lossy": {...}}`` config."""
    codec.update(force=True)
    state = {k: v.detach().cpu() for k, v in codec.state_dict().items()}
    _write_model_file(path, LOSSY_MODEL_FORMAT, LOSSY_MODEL_FORMAT_VERSION, config, state, meta)


def _write_model_file(path: str | Path, fmt: str, version: int, config: dict, state: dict, meta: dict | None,
                      **extra: Any) -> None:
    torch.save({"format": fmt, "format_version": version, "nlic_version": nlic.__version__, "config": config,
                "meta": meta or {}, **extra, "state_dict": state}, str(path))


def _format_version(path: Path, blob: dict, latest: int, kind: str) -> int:
    version = blob.get("format_version", 0)
    if not isinstance(version, int) or version > latest:
        raise ModelError(f"{path} was written by a newer nlic ({kind} format {version!r}, this nlic reads "
                         f"up to {latest}); upgrade nlic")
    return version


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


def load_model(path: str | Path) -> LoadedModel:
    """Load a model or Lightning checkpoint (a checkpoint is calibrated here; exported models
    carry their calibration, so every machine builds the same integer network)."""
    path = Path(path)
    blob = read_model_file(path)
    if not isinstance(blob, dict):
        raise ModelError(f"{path} is not an nlic model file")
    hparams = blob.get("hyper_parameters")
    if blob.get("format") == MODEL_FORMAT:
        version = _format_version(path, blob, MODEL_FORMAT_VERSION, "model")
        config, state = blob.get("config"), blob.get("state_dict")
        quantization = blob.get("quantization")
        if version < 2:
            raise ModelError(f"{path} is a model of nlic 0.1 (model format {version}), whose float probabilities "
                             "are not portable; export it again from its checkpoint with this nlic (nlic export)")
    elif isinstance(blob.get("state_dict"), dict) and isinstance(hparams, dict) and "model_config" in hparams:
        config = hparams["model_config"]
        state = checkpoint_codec_state(blob["state_dict"])
        quantization = None
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
    codec.lossy.update(force=False)  # only where no tables were stored (checkpoints); see save_model
    from nlic.residual.integer import INTEGER_FORMAT

    if not isinstance(quantization, dict):
        quantization = calibrate_codec(codec)
    elif quantization.get("format") != INTEGER_FORMAT:
        raise ModelError(f"{path} was calibrated for integer network format {quantization.get('format')!r}, this "
                         f"nlic computes format {INTEGER_FORMAT}; export it again from its checkpoint (nlic export)")
    # the id covers what the decoder computes with: the loaded (and updated) weights, calibration
    return LoadedModel(codec, config, quantization, model_id(config, codec.state_dict(), quantization), path)


def load_lossy_model(path: str | Path) -> tuple[LossyCodec, dict]:
    """Load a file written by :func:`save_lossy_model`; returns ``(codec in eval mode, config)``."""
    path = Path(path)
    blob = read_model_file(path)
    if not isinstance(blob, dict) or blob.get("format") != LOSSY_MODEL_FORMAT:
        raise ModelError(f"{path} is not an nlic lossy-only model (lossy_model.pt)")
    _format_version(path, blob, LOSSY_MODEL_FORMAT_VERSION, "lossy model")
    config = blob.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("lossy"), dict):
        raise ModelError(f"{path} is not a valid lossy-only model file (bad config)")
    check_targets(config, path)
    codec = instantiate(OmegaConf.create(config).lossy)
    load_codec_state(codec, blob["state_dict"])
    codec.eval()
    codec.update(force=True)
    return codec, config
