"""Function-preserving growth of a trained residual head (warm start of a wider or deeper model).

A :class:`~nlic.residual.network.ContextHead` of a larger size (``context_channels``, ``hidden``,
``layers``, ``channel_hidden``) starts from a trained smaller one and computes exactly what it
computed: the old units keep their weights, every new unit keeps its fresh incoming weights (so
the new units differ from one another) and gets zero outgoing weights (so it changes nothing until
training moves them), and each added trunk layer starts as the identity (its input is a ReLU
output, so ``relu(I h) = h``).  Training then finds uses for the new capacity from where the
small model stood instead of from scratch.

Layout of a head's tensors that this relies on: the context layer's rows are its features then one
linear mean prediction per channel (moved to the end of the wider layer); ``channel_in[c]`` reads
the trunk output then the pixel's ``c`` earlier channels (moved past the wider trunk output); the
per-tau modulations (``film``) are listed context, trunk layers, channels (shifted past the added
trunk layers).
"""

from __future__ import annotations

import re

import torch
from torch import Tensor


def _head_prefixes(state: dict[str, Tensor]) -> list[str]:
    return [k[: -len("context_weight")] for k in state if k.endswith("context_weight")]


def _count(state: dict[str, Tensor], prefix: str, part: str) -> int:
    pattern = re.compile(re.escape(f"{prefix}{part}.") + r"(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


def _grow_linear(old: Tensor, fresh: Tensor, in_map: list[tuple[slice, slice]]) -> Tensor:
    """``fresh`` with ``old`` in its first rows: each ``(old columns, new columns)`` pair of ``in_map``
    copied, the old rows' other columns (those reading new units) zero; new rows keep their fresh
    weights (new units read everything; what reads them starts at zero)."""
    out = fresh.detach().clone()
    rows = old.shape[0]
    read = torch.zeros(out.shape[1], dtype=torch.bool)
    for src, dst in in_map:
        read[dst] = True
        out[:rows, dst] = old[:, src].to(out.dtype)
    out[:rows, ~read] = 0.0
    return out


def _grow_vector(old: Tensor, fresh: Tensor) -> Tensor:
    out = fresh.detach().clone()
    out[: old.shape[0]] = old.to(out.dtype)
    return out


def widen_heads(state: dict[str, Tensor], own: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with every head that is smaller than ``own``'s (same prefix) grown to ``own``'s
    sizes, function-preserving; other tensors pass through.  Heads of equal size are untouched."""
    state = dict(state)
    for prefix in _head_prefixes(own):
        key = prefix + "context_weight"
        if key not in state:
            continue
        old_layers, new_layers = _count(state, prefix, "trunk"), _count(own, prefix, "trunk")
        if old_layers == new_layers and all(state[k].shape == own[k].shape
                                            for k in own if k.startswith(prefix) and k in state):
            continue
        if new_layers < old_layers or own[key].shape[0] < state[key].shape[0]:
            raise ValueError(f"{prefix}: can only grow a head, not shrink it")
        channels = own[key].shape[1]  # the context layer reads, and predicts one mean for, each channel
        old_c, new_c = state[key].shape[0] - channels, own[key].shape[0] - channels
        grown: dict[str, Tensor] = {}
        # context layer: features, then the per-channel mean predictions (moved to the end)
        for name in ("context_weight", "context_bias"):
            old, out = state[prefix + name], own[prefix + name].detach().clone()
            out[:old_c] = old[:old_c].to(out.dtype)
            out[new_c:] = old[old_c:].to(out.dtype)
            grown[prefix + name] = out
        width_old, width_new = old_c, new_c  # width of the layer feeding the next one
        for i in range(new_layers):
            w, b = f"{prefix}trunk.{i}.weight", f"{prefix}trunk.{i}.bias"
            if i < old_layers:
                grown[w] = _grow_linear(state[w], own[w], [(slice(0, width_old), slice(0, width_old))])
                grown[b] = _grow_vector(state[b], own[b])
                width_old = state[w].shape[0]
            else:  # an added layer: the identity on the units so far; its new units fresh
                grown[w] = own[w].detach().clone()
                grown[w][:width_old] = 0.0
                grown[w][:width_old, :width_old] = torch.eye(width_old, dtype=grown[w].dtype)
                grown[b] = own[b].detach().clone()
                grown[b][:width_old] = 0.0
            width_new = own[w].shape[0]
        for c in range(channels):
            w, b = f"{prefix}channel_in.{c}.weight", f"{prefix}channel_in.{c}.bias"
            n_cur = state[w].shape[1] - width_old
            in_map = [(slice(0, width_old), slice(0, width_old)),
                      (slice(width_old, width_old + n_cur), slice(width_new, width_new + n_cur))]
            grown[w] = _grow_linear(state[w], own[w], in_map)
            grown[b] = _grow_vector(state[b], own[b])
            w_out = f"{prefix}channel_out.{c}.weight"
            hidden_old = state[w].shape[0]
            grown[w_out] = _grow_linear(state[w_out], own[w_out], [(slice(0, hidden_old), slice(0, hidden_old))])
            grown[f"{prefix}channel_out.{c}.bias"] = state[f"{prefix}channel_out.{c}.bias"]
        # per-tau modulations: context, trunk layers, channels; added layers start as the identity
        old_films = _count(state, prefix, "film")
        for i in range(old_films):
            j = i if i <= old_layers else i + new_layers - old_layers
            for name in ("scale", "bias"):
                old, fresh = state[f"{prefix}film.{i}.{name}"], own[f"{prefix}film.{j}.{name}"]
                out = torch.zeros_like(fresh)
                out[:, : old.shape[1]] = old.to(out.dtype)
                grown[f"{prefix}film.{j}.{name}"] = out
        for i in range(old_layers + 1, new_layers + 1) if old_films else ():
            for name in ("scale", "bias"):
                grown[f"{prefix}film.{i}.{name}"] = torch.zeros_like(own[f"{prefix}film.{i}.{name}"])
        state.update(grown)
    return state
