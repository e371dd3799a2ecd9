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
