"""Per-patch offsets of the residual quantizer's grid (tau >= 1).

The quantized residual's bins are ``2*tau+1`` wide on a grid the lossy image fixes (without a lossy
layer: 128 + k * (2*tau+1)).  On a flat patch whose value sits near a bin edge, the noise falls on
both sides of the edge and nearly every sample costs a bit, where a bin holding the whole patch
would cost almost nothing (JPEG-LS avoids this by quantizing around its prediction).  Patches share
no context, so each may have its own grid: the encoder shifts each patch's grid, per channel, by the
offset in ``[-tau, tau]`` that leaves the fewest changes of bin between neighbouring samples (a
cheap stand-in for the code length: the network codes runs of equal bins for almost nothing), and
stores the offsets, ``ceil(log2(2*tau+1))`` bits each.  The decoder shifts the lossy image by them.
The choice and the shift are :func:`nlic.residual.quantizer.grid_offsets` / :func:`shift_grid`
(training and estimation use them too); this module stores them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from nlic.errors import BitstreamError
from nlic.residual.quantizer import bin_width


def offset_bits(tau: int) -> int:
    """Bits of one stored offset (``2*tau+1`` values)."""
    return max(1, math.ceil(math.log2(bin_width(tau))))


def pack(offsets: Tensor, tau: int) -> bytes:
    """Offsets ``[P, c]`` as ``offset_bits(tau)``-bit fields (offset + tau), most significant first."""
    b = offset_bits(tau)
    values = (offsets.reshape(-1).numpy().astype(np.int64) + tau)[:, None]
    bits = (values >> np.arange(b - 1, -1, -1)[None, :]) & 1
    return np.packbits(bits.astype(np.uint8).reshape(-1)).tobytes()


def unpack(data: bytes, shape: tuple[int, int], tau: int) -> Tensor:
    """Inverse of :func:`pack` for ``shape = (patches, channels)``; a wrong length or an offset
    outside ``[-tau, tau]`` is a corrupt file."""
    b = offset_bits(tau)
    n = shape[0] * shape[1]
    if len(data) != -(-n * b // 8):
        raise BitstreamError("file is corrupt (grid offsets do not match the tile)")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: n * b].reshape(n, b).astype(np.int64)
    values = bits @ (1 << np.arange(b - 1, -1, -1))
    if (values > 2 * tau).any():
        raise BitstreamError("file is corrupt (grid offset out of range)")
    return torch.from_numpy(values - tau).reshape(shape)
