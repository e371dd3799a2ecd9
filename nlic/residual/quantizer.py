"""The near-lossless quantizer: bin width 2*tau+1, symmetric round-to-nearest multiple."""

from __future__ import annotations

import torch
from torch import Tensor


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
    change least between horizontal and vertical neighbours."""
    w = bin_width(tau)
    r = pixels.float() - x_hat.float()
    costs = []
    for o in range(-tau, tau + 1):
        k = torch.div(quantize_residual(r - o, tau), w, rounding_mode="floor")
        changes = (k[..., 1:, :] != k[..., :-1, :]).sum((-1, -2)) + (k[..., :, 1:] != k[..., :, :-1]).sum((-1, -2))
        costs.append(changes.double() + _TIE_BREAK * abs(o))
    return torch.stack(costs, -1).argmin(-1) - tau


def shift_grid(x_hat: Tensor, offsets: Tensor) -> Tensor:
    """``x_hat`` patches ``[P, c, S, S]`` with each patch's grid moved by its offsets ``[P, c]``."""
    return x_hat + offsets.to(x_hat.dtype)[..., None, None]
