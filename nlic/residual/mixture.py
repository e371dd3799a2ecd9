"""Discretized logistic mixture over RGB residuals (PixelCNN++-style channel coupling).

Per sample the network predicts ``10*K`` numbers: K mixture logits shared by R, G, B, and per
channel K means, K log-scales and K coupling coefficients (G <- R, B <- R, B <- G).  Residuals are
in pixel units; the support of ``r`` given the lossy value ``x_hat`` is ``[-x_hat, 255 - x_hat]``,
so the extreme integers take the tails of the logistic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_SCALE_MIN = -4.0
LOG_SCALE_MAX = 6.0


def params_per_sample(k: int) -> int:
    return 10 * k


@dataclass
class MixtureParams:
    """Mixture parameters, channel-last: logits ``[..., K]``, others ``[..., 3, K]``."""

    logits: Tensor
    means: Tensor
    log_scales: Tensor
    coeffs: Tensor  # [..., 3, K]: alpha (G|R), beta (B|R), gamma (B|G)

    @classmethod
    def from_raw(cls, raw: Tensor, k: int) -> MixtureParams:
        logits = raw[..., :k]
        rest = raw[..., k:].unflatten(-1, (3, 3, k))  # [..., what, channel/coef, K]
        means = rest[..., 0, :, :] * 16.0  # network outputs ~O(1); residuals are ~O(10)
        log_scales = rest[..., 1, :, :].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX) + 1.0
        coeffs = torch.tanh(rest[..., 2, :, :])
        return cls(logits, means, log_scales, coeffs)

    def channel_means(self, r_prev: Tensor) -> Tensor:
        """Means ``[..., 3, K]`` given the (quantized) residuals of R and G of the same pixel.

        ``r_prev`` is ``[..., 3]`` (the B entry is ignored).
        """
        r_r = r_prev[..., 0:1]
        r_g = r_prev[..., 1:2]
        m_r = self.means[..., 0, :]
        m_g = self.means[..., 1, :] + self.coeffs[..., 0, :] * r_r
        m_b = self.means[..., 2, :] + self.coeffs[..., 1, :] * r_r + self.coeffs[..., 2, :] * r_g
        return torch.stack([m_r, m_g, m_b], dim=-2)


def _log_sigmoid_diff(upper: Tensor, lower: Tensor) -> Tensor:
    """log(sigmoid(upper) - sigmoid(lower)) for upper > lower, stable in the tails."""
    # sigmoid(a) - sigmoid(b) = exp(a') ... use: log(σ(u)-σ(l)) = log σ(u) + log(1 - exp(l' - u'))
    # with the identity σ(u)-σ(l) = σ(u)σ(-l)(1-exp(l-u))
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


def joint_log_likelihood(
    params: MixtureParams, target: Tensor, coupling: Tensor, lo: Tensor, hi: Tensor
) -> Tensor:
    """log p(target bins) under the mixture, summed over RGB (channel-last tensors ``[..., 3]``).

    ``coupling`` are the residuals the G/B means are conditioned on (``r`` in training, the
    quantized ``r_hat`` when only those are known); ``lo``/``hi`` are the bin edges of ``target``.
    """
    means = params.channel_means(coupling)  # [..., 3, K]
    log_mass = component_log_mass(lo.unsqueeze(-1), hi.unsqueeze(-1), means, params.log_scales)
    log_pi = F.log_softmax(params.logits, dim=-1)
    return torch.logsumexp(log_pi + log_mass.sum(dim=-2), dim=-1)
