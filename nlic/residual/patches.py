"""Splitting images into independent 64x64 coding patches and back."""

from __future__ import annotations

from torch import Tensor

PATCH = 64


def patchify(x: Tensor, patch: int = PATCH) -> Tensor:
    """``[B, C, H, W]`` (H, W multiples of ``patch``) -> ``[B*nh*nw, C, patch, patch]``."""
    B, C, H, W = x.shape
    nh, nw = H // patch, W // patch
    x = x.reshape(B, C, nh, patch, nw, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B * nh * nw, C, patch, patch)


def unpatchify(p: Tensor, batch: int, height: int, width: int, patch: int = PATCH) -> Tensor:
    """Inverse of :func:`patchify`."""
    C = p.shape[1]
    nh, nw = height // patch, width // patch
    x = p.reshape(batch, nh, nw, C, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(batch, C, height, width)
