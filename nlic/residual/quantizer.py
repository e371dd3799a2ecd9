"""The near-lossless quantizer: bin width 2*tau+1, symmetric round-to-nearest multiple."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from nlic.compiled import numba


def bin_width(tau: int) -> int:
    return 2 * int(tau) + 1


def quantize_residual(r: Tensor, tau: int | Tensor) -> Tensor:
    """Round integer residuals to the nearest multiple of ``2*tau+1`` so that ``|r - q| <= tau``.

    ``tau`` may be an int or a tensor broadcastable to ``r`` (one tau per batch item).
    """
    if isinstance(tau, int) and tau == 0:
        return r
    w = 2 * tau + 1
    return torch.sign(r) * w * torch.div(r.abs() + tau, w, rounding_mode="floor")


def bin_index(r_hat: Tensor, tau: int) -> Tensor:
    """Integer bin index ``k`` of a quantized residual (``r_hat = k * (2*tau+1)``)."""
    return torch.div(r_hat, bin_width(tau), rounding_mode="floor")


#: a tie between grid offsets goes to the one nearest zero (a tiny penalty per unit of |offset|)
_TIE_BREAK = 1e-3


def grid_offsets(pixels: Tensor, x_hat: Tensor, tau: int) -> Tensor:
    """Grid offsets ``[P, c]`` (int64, in ``[-tau, tau]``) of patches ``pixels`` / ``x_hat``
    ``[P, c, S, S]`` (see :mod:`nlic.coding.grid`): per patch and channel, the offset whose bins
    change least between horizontal and vertical neighbours (ties: the smaller ``|offset|``, then
    the negative one).

    Integer residuals on the CPU (what the coder has) take one compiled pass over the neighbour
    pairs; otherwise (training, a float lossy image) every offset is tried in turn: the same
    offsets (tests hold them equal), the first 10-20x faster."""
    r = pixels.float() - x_hat.float()
    if r.device.type == "cpu" and r.numel() and bool((r == r.round()).all()) and float(r.abs().max()) < 2**20:
        return torch.from_numpy(_fewest_changes(np.ascontiguousarray(r.numpy(), dtype=np.int32), int(tau)))
    w = bin_width(tau)
    costs = []
    for o in range(-tau, tau + 1):
        k = torch.div(quantize_residual(r - o, tau), w, rounding_mode="floor")
        changes = (k[..., 1:, :] != k[..., :-1, :]).sum((-1, -2)) + (k[..., :, 1:] != k[..., :, :-1]).sum((-1, -2))
        costs.append(changes.double() + _TIE_BREAK * abs(o))
    return torch.stack(costs, -1).argmin(-1) - tau


@numba.njit(cache=True, nogil=True, inline="always")
def _count_edges(a, b, tau, counts):  # pragma: no cover - compiled
    """Add one to ``counts[o + tau]`` for every offset ``o`` whose bins differ at residuals ``a``, ``b``.

    With offset ``o`` the bin of residual ``x`` is ``floor((x - o + tau) / w)``: it steps up between
    ``x - 1`` and ``x`` iff ``x - o + tau`` is a multiple of ``w``, so each ``x`` in ``(lo, hi]`` is
    an edge of exactly one offset, and a gap of ``w`` or more crosses an edge of every offset."""
    w = 2 * tau + 1
    lo, hi = min(a, b), max(a, b)
    if hi - lo >= w:
        for i in range(w):
            counts[i] += 1
        return
    for x in range(lo + 1, hi + 1):
        m = (x + tau) % w  # o = x + tau (mod w), taken in [-tau, tau]: index o + tau
        counts[m + tau if m <= tau else m - tau - 1] += 1


@numba.njit(cache=True, nogil=True)
def _fewest_changes(r, tau):  # pragma: no cover - compiled
    """:func:`grid_offsets` of integer residuals ``r`` ``[P, c, S, S]`` (int32)."""
    P, C, S = r.shape[0], r.shape[1], r.shape[2]
    out = np.empty((P, C), dtype=np.int64)
    counts = np.empty(2 * tau + 1, dtype=np.int64)
    for p in range(P):
        for c in range(C):
            counts[:] = 0
            for i in range(S):
                for j in range(S):
                    a = r[p, c, i, j]
                    if j + 1 < S and r[p, c, i, j + 1] != a:
                        _count_edges(a, r[p, c, i, j + 1], tau, counts)
                    if i + 1 < S and r[p, c, i + 1, j] != a:
                        _count_edges(a, r[p, c, i + 1, j], tau, counts)
            best = 0
            for i in range(1, 2 * tau + 1):  # fewest changes, then smallest |offset|, then the first
                if counts[i] < counts[best] or (counts[i] == counts[best] and abs(i - tau) < abs(best - tau)):
                    best = i
            out[p, c] = best - tau
    return out


def shift_grid(x_hat: Tensor, offsets: Tensor) -> Tensor:
    """``x_hat`` patches ``[P, c, S, S]`` with each patch's grid moved by its offsets ``[P, c]``."""
    return x_hat + offsets.to(x_hat.dtype)[..., None, None]
