"""Per-tile adaptation: the encoder re-fits each channel's output layer to the tile it codes and sends
the change, so the model follows a photo unlike its training crops (sharper, noisier, flatter).

This is per-image fine-tuning (as CALLIC does) restricted to the last layer: its inputs are
computed once, so fitting takes a few milliseconds per iteration, and the change is a few hundred
small integers.  Deltas are in steps of ``max|w| / STEP_DIVISOR`` of their row, stored as int8 and
zlib-compressed; the decoder adds them to its integer layer, so the adapted network is as exact as
the shipped one (its accumulator bound is checked again).  The encoder keeps an adaptation only when
the bits it saves exceed its own size.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from nlic.errors import BitstreamError
from nlic.residual.integer import EXACT_LIMIT, WEIGHT_MAX, IntegerHead, IntLinear
from nlic.residual.mixture import LOG_SCALE_MAX, LOG_SCALE_MIN, MEAN_SCALE, MixtureParams, bin_edges, log_likelihood

#: a delta step is the largest |weight| of its row divided by this (finer steps fit better: 64 saved
#: 2 %, 1024 saved 7 % on validation crops)
STEP_DIVISOR = 1024
#: deltas are int8
DELTA_LIMIT = 127
#: fitting: Adam iterations, their step (in delta steps) and the pixels they see.  Adam's first
#: steps move every delta by about the step at once: at 8 steps the fit threw the default model's layers
#: far off (astronaut's 512-pixel tile, tau 0: B's sampled bits 4.40 -> 8.24 a symbol at the first
#: iteration, 7.77 at the 40th) and no channel's fit was kept; at 0.5 each channel's bits fall from
#: the first iteration on (B 4.40 -> 3.58 without log-scale offsets; 1 and 2 did about as well, 4 not)
ITERATIONS = 40
LEARNING_RATE = 0.5
SAMPLES = 8192
ADAM_BETAS = (0.9, 0.999)
#: the fit's arithmetic (encoder only: the file stores the rounded deltas): float32's files came
#: within 4 bytes of float64's on three held-out photos at tau 0 (1.3 MB in all) for 12 % less encoding
FIT_DTYPE = torch.float32


def _steps(layer: IntLinear) -> Tensor:
    """Delta step of each output row (an integer >= 1)."""
    biggest = torch.maximum(layer.weight.abs().amax(1), layer.bias.abs())
    return torch.clamp(torch.round(biggest / STEP_DIVISOR), min=1.0)


def adapted_layer(layer: IntLinear, deltas: np.ndarray, limits: Sequence[int]) -> IntLinear:
    """``layer`` plus ``deltas`` (``[out, in + 1]``: weights then bias, in steps); refuses a result
    whose accumulator bound breaks the exactness proof."""
    steps = _steps(layer)[:, None]
    d = torch.from_numpy(deltas.astype(np.float32)).to(steps.device) * steps
    out = IntLinear(layer.weight + d[:, :-1], layer.bias + d[:, -1], layer.exponent)
    if float(out.weight.abs().amax()) > WEIGHT_MAX or (out.bound(limits) > EXACT_LIMIT).any():
        raise BitstreamError("tile adaptation breaks the integer network's bounds")
    return out


def pack(deltas: Sequence[np.ndarray | None]) -> bytes:
    """``mask u8 | zlib(int8 deltas of the adapted channels)``; empty when nothing is adapted."""
    if all(d is None for d in deltas):
        return b""
    mask = sum(1 << c for c, d in enumerate(deltas) if d is not None)
    body = b"".join(d.astype(np.int8).tobytes() for d in deltas if d is not None)
    return struct.pack("<B", mask) + zlib.compress(body, 9)


def unpack(data: bytes, head: IntegerHead, channels: int) -> list[IntLinear | None]:
    """The output layers of a tile: adapted where ``data`` says so, else None (the shipped one)."""
    layers: list[IntLinear | None] = [None] * channels
    if not data:
        return layers
    mask = data[0]
    if mask >> channels:
        raise BitstreamError("tile adaptation names a channel the image does not have")
    shapes = [tuple(head.channel_out[c].weight.shape) for c in range(channels)]
    sizes = [(o * (i + 1)) if mask >> c & 1 else 0 for c, (o, i) in enumerate(shapes)]
    try:
        body = zlib.decompressobj().decompress(data[1:], sum(sizes) + 1)
    except zlib.error:
        raise BitstreamError("tile adaptation cannot be decoded") from None
    if len(body) != sum(sizes):
        raise BitstreamError("tile adaptation has the wrong size")
    at = 0
    for c, ((o, i), n) in enumerate(zip(shapes, sizes)):
        if n:
            deltas = np.frombuffer(body[at : at + n], dtype=np.int8).reshape(o, i + 1)
            layers[c] = adapted_layer(head.channel_out[c], deltas, head.output_limits(c))
            at += n
    return layers


def _bits(head: IntegerHead, weight: Tensor, bias: Tensor, exponent: Tensor, inputs: Tensor, lo: Tensor,
          hi: Tensor) -> Tensor:
    """Float estimate of the bits of the sampled symbols under an output layer (``inputs`` [N, in])."""
    K = head.mixtures
    scale = torch.exp2(exponent.to(weight.dtype))
    acc = (inputs @ weight.T + bias) * scale  # the float values the integer outputs stand for
    params = MixtureParams(acc[:, :K], acc[:, K : 2 * K] * MEAN_SCALE,
                           acc[:, 2 * K :].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX))
    return -log_likelihood(params, lo, hi).sum() / math.log(2.0)


def fit(head: IntegerHead, c: int, inputs: Sequence[Tensor], bins: Tensor, lo: Tensor, hi: Tensor, tau: int,
        count: int) -> np.ndarray | None:
    """Deltas for channel ``c``'s output layer from sampled inputs (``inputs``: its three input
    blocks, ``[N, *]``) and their symbols, or None when they would not pay for themselves over the
    tile's ``count`` symbols."""
    layer = head.channel_out[c]
    dt = FIT_DTYPE
    x = torch.cat([t.to(dt) for t in inputs], -1)
    w = 2 * tau + 1
    r = bins.to(dt) * w
    lo_e, hi_e = bin_edges(r, tau, lo.to(dt) * w, hi.to(dt) * w)
    weight0, bias0 = layer.weight.to(dt), layer.bias.to(dt)
    steps = _steps(layer).to(dt)
    # the unknowns are the deltas in steps of their row, so Adam's step size (about lr) is in steps
    delta = torch.zeros(weight0.shape[0], weight0.shape[1] + 1, dtype=dt, requires_grad=True)
    # Adam written out: torch.optim's constructor imports torch._dynamo, 2-3 s at every encoder start
    m, v = torch.zeros_like(delta), torch.zeros_like(delta)
    with torch.enable_grad():
        for t in range(1, ITERATIONS + 1):
            d = delta * steps[:, None]
            loss = _bits(head, weight0 + d[:, :-1], bias0 + d[:, -1], layer.exponent, x, lo_e, hi_e) / len(x)
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                m.mul_(ADAM_BETAS[0]).add_(grad, alpha=1 - ADAM_BETAS[0])
                v.mul_(ADAM_BETAS[1]).addcmul_(grad, grad, value=1 - ADAM_BETAS[1])
                m_hat, v_hat = m / (1 - ADAM_BETAS[0] ** t), v / (1 - ADAM_BETAS[1] ** t)
                delta -= LEARNING_RATE * m_hat / (v_hat.sqrt() + 1e-8)
    with torch.no_grad():
        deltas = torch.clamp(torch.round(delta), -DELTA_LIMIT, DELTA_LIMIT).numpy().astype(np.int8)
        new = None
        while new is None and deltas.any():  # within the exactness bounds, shrinking if it must
            try:
                new = adapted_layer(layer, deltas, head.output_limits(c))
            except BitstreamError:
                deltas = np.trunc(deltas / 2).astype(np.int8)  # towards zero: it ends
        if new is None:
            return None
        before = float(_bits(head, weight0, bias0, layer.exponent, x, lo_e, hi_e))
        after = float(_bits(head, new.weight.to(dt), new.bias.to(dt), layer.exponent, x, lo_e, hi_e))
    saved = (before - after) * count / len(x)
    cost = 8 * len(zlib.compress(deltas.tobytes(), 9))
    return deltas if saved > cost else None
