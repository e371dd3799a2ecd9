"""Warm start: initialise a module's codec from the weights of an earlier model (``init_weights=``).

Unlike ``ckpt_path`` (resume: weights, optimizer, step counters and epoch), this copies weights
only, so a new run can fine-tune a shipped model with its own learning-rate schedule, or build a
near-lossless system on a lossy codec trained alone (``experiment=lossy_only``).

Accepted files (all read with ``weights_only=True``):

- an exported near-lossless model (``model.pt``, ``nlic export``, float16 allowed);
- an exported lossy-only model (``lossy_model.pt``): loaded into the lossy layer when the module
  trains the near-lossless system;
- an ``nlic-train`` Lightning checkpoint of either module.

A tensor whose shape differs from the module's (a layer whose width changed, e.g. the synthesis
output of 3 image + ``feature_channels`` channels) gets the overlapping block copied (the image
channels and the first feature channels) and keeps its fresh values elsewhere; it is listed in the log.
A residual head of larger sizes (``residual.context_channels``, ``hidden``, ``layers``,
``channel_hidden``) starts as the smaller trained one, function-preserving (:mod:`nlic.residual.widen`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from nlic.errors import ModelError
from nlic.model_io import CDF_BUFFERS, checkpoint_codec_state, read_model_file
from nlic.residual.widen import widen_heads

log = logging.getLogger("nlic.train")


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        blob = read_model_file(path)
    except ModelError as err:
        raise ModelError(f"init_weights: {err}") from None
    state = blob.get("state_dict") if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise ModelError(f"init_weights: {path} holds no state_dict (not an nlic model or checkpoint)")
    if "hyper_parameters" in blob:  # Lightning checkpoint
        state = checkpoint_codec_state(state)
    return state


def load_init_weights(codec: torch.nn.Module, path: str | Path, only: str | None = None,
                      rename: tuple[str, str] | None = None) -> dict[str, int]:
    """Copy matching weights of the model file ``path`` into ``codec``; returns counts.

    ``only``: a key prefix (e.g. ``residual.tau_head.``): copy just those tensors.  ``rename``:
    ``(source prefix, target prefix)``, e.g. start the tau head from a trained plain head
    (``("residual.head.", "residual.tau_head.")``; its per-tau modulation starts as the identity).

    A lossy-only state (keys without the ``lossy.``/``residual.`` prefixes) is mapped into
    ``codec.lossy`` when ``codec`` is a near-lossless system.  CompressAI's CDF tables are skipped:
    training recomputes them (``update()``) before any real coding.
    """
    path = Path(path)
    state = _read_state(path)
    if rename is not None:
        src, dst = rename
        state = {dst + k[len(src):]: v for k, v in state.items() if k.startswith(src)}
        only = only or dst
    own = codec.state_dict()
    state = widen_heads(state, own)  # a wider or deeper residual head starts as the trained one
    has_lossy_layer = any(k.startswith("lossy.") for k in own)
    if has_lossy_layer and not any(k.startswith(("lossy.", "residual.")) for k in state):
        state = {f"lossy.{k}": v for k, v in state.items()}
    loaded, mismatched = {}, []
    for key, value in state.items():
        if key.rsplit(".", 1)[-1] in CDF_BUFFERS or key not in own or (only and not key.startswith(only)):
            continue
        if own[key].shape != value.shape:
            mismatched.append(key)
            if own[key].dim() != value.dim():
                continue
            # a layer whose width changed (e.g. the synthesis output: 3 image + feature channels):
            # keep the overlapping block, so the image channels survive a new feature width
            overlap = tuple(slice(0, min(a, b)) for a, b in zip(own[key].shape, value.shape))
            merged = own[key].detach().clone()
            merged[overlap] = value[overlap].to(merged.dtype)
            loaded[key] = merged
            continue
        loaded[key] = value.to(own[key].dtype)
    if not loaded:
        raise ModelError(f"init_weights: no tensor of {path} matches this model's architecture")
    codec.load_state_dict(loaded, strict=False)
    fresh = [k for k in own if k not in loaded and k.rsplit(".", 1)[-1] not in CDF_BUFFERS
             and (not only or k.startswith(only))]
    log.info("init_weights %s: %d tensors loaded, %d kept fresh, %d partly (shape changed)%s", path, len(loaded),
             len(fresh), len(mismatched), f" ({', '.join(mismatched[:6])})" if mismatched else "")
    return {"loaded": len(loaded), "fresh": len(fresh), "mismatched": len(mismatched)}
