"""Rate: the information content of likelihoods, in bits (one implementation for the project)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: likelihoods are clamped here before the log (CompressAI's entropy models can return 0)
LIKELIHOOD_FLOOR = 1e-9


def information_bits(likelihoods: Tensor) -> Tensor:
    """Bits of each batch item: ``-sum(log2 p)`` over every axis but the first, shape ``[B]``."""
    return -torch.log2(likelihoods.clamp_min(LIKELIHOOD_FLOOR)).flatten(1).sum(1)


def log_likelihood_bits(log_likelihood: Tensor) -> Tensor:
    """Bits of each batch item from natural-log likelihoods: ``-sum(ln p) / ln 2``, shape ``[B]``."""
    return -log_likelihood.flatten(1).sum(1) / math.log(2.0)


def latent_bits(likelihoods: dict[str, Tensor], batch: int, device: torch.device | None = None) -> Tensor:
    """Bits of all latents of each batch item, ``[B]`` (zeros when a codec has no latents)."""
    total = torch.zeros(batch, device=device)
    for lk in likelihoods.values():
        total = total + information_bits(lk.float())
    return total


def bits_per_pixel(bits: Tensor, pixels: int) -> Tensor:
    """Total ``bits`` (any shape, summed) over ``pixels`` pixels."""
    return bits.sum() / pixels
