"""Discretized logistic mixtures, one per colour channel, integrated over quantization bins.

Per sample and channel the network predicts ``3*K`` numbers: K mixture logits, K means and K
log-scales.  Channel coupling (G given R, B given R and G) lives in the network, which sees the
current pixel's already-coded channels, so the three channels' mixtures are independent here.
Residuals are in pixel units; the support of ``r`` given the lossy value ``x_hat`` is
``[-x_hat, 255 - x_hat]``, so the extreme bins take the tails of the logistic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: natural-log bounds of a component's scale in pixel units (the exact coder's grid covers them)
LOG_SCALE_MIN = -3.0
LOG_SCALE_MAX = 5.0
#: the network's mean outputs are O(1); residuals are O(10)
MEAN_SCALE = 16.0


def params_per_channel(k: int) -> int:
    return 3 * k


@dataclass
class MixtureParams:
    """Mixture parameters of one channel: ``logits``, ``means``, ``log_scales``, each ``[..., K]``."""

    logits: Tensor
    means: Tensor
    log_scales: Tensor

    @classmethod
    def from_raw(cls, raw: Tensor, mean_offset: Tensor | None = None) -> MixtureParams:
        """``raw`` ``[..., 3K]`` -> parameters; ``mean_offset`` ``[...]`` (pixel units) shifts every mean."""
        logits, means, log_scales = raw.chunk(3, dim=-1)
        means = means * MEAN_SCALE
        if mean_offset is not None:
            means = means + mean_offset.unsqueeze(-1)
        return cls(logits, means, log_scales.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX))


def _log_sigmoid_diff(upper: Tensor, lower: Tensor) -> Tensor:
    """log(sigmoid(upper) - sigmoid(lower)) for upper > lower, stable in the tails:
    sigmoid(u) - sigmoid(l) = sigmoid(u) * sigmoid(-l) * (1 - exp(l - u))."""
    diff = (lower - upper).clamp(max=-1e-6)
    return F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(diff))


def component_log_mass(lo: Tensor, hi: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log of the logistic mass on [lo, hi] (``lo=-inf`` / ``hi=+inf`` allowed).

    Infinite edges are replaced *before* any arithmetic: ``inf * 0`` in an unselected
    ``torch.where`` branch would otherwise turn every gradient into NaN.
    """
    lower_open = torch.isneginf(lo)
    upper_open = torch.isposinf(hi)
    lo_f = torch.where(lower_open, torch.zeros_like(lo), lo)
    hi_f = torch.where(upper_open, torch.zeros_like(hi), hi)
    inv_s = torch.exp(-log_scale)
    u = (hi_f - mean) * inv_s
    l = (lo_f - mean) * inv_s
    # for the closed-interval branch keep u > l even where an edge was replaced
    both = _log_sigmoid_diff(torch.where(upper_open, l + 1.0, u), torch.where(lower_open, u - 1.0, l))
    out = torch.where(lower_open, F.logsigmoid(u), both)  # mass of (-inf, hi]
    out = torch.where(upper_open, F.logsigmoid(-l), out)  # mass of [lo, +inf)
    return torch.where(lower_open & upper_open, torch.zeros_like(out), out)


def bin_edges(r_hat: Tensor, tau: int | Tensor, lo_bound: Tensor, hi_bound: Tensor) -> tuple[Tensor, Tensor]:
    """Integration interval of the bin of ``r_hat`` (width 2*tau+1), tails at the support ends.

    ``lo_bound``/``hi_bound`` are the quantized residuals of the support ends; the bin holding
    them extends to -inf / +inf.
    """
    half = tau + 0.5
    lo = torch.where(r_hat <= lo_bound, torch.full_like(r_hat, float("-inf")), r_hat - half)
    hi = torch.where(r_hat >= hi_bound, torch.full_like(r_hat, float("inf")), r_hat + half)
    return lo, hi


def log_likelihood(params: MixtureParams, lo: Tensor, hi: Tensor) -> Tensor:
    """log p(bin [lo, hi]) of one channel under its mixture; ``lo``/``hi`` are ``[...]``."""
    log_mass = component_log_mass(lo.unsqueeze(-1), hi.unsqueeze(-1), params.means, params.log_scales)
    return torch.logsumexp(F.log_softmax(params.logits, dim=-1) + log_mass, dim=-1)
