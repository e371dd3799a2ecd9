"""The near-lossless system: a lossy codec + the residual probability network.

``NearLosslessCodec`` is a plain ``nn.Module`` (no Lightning): ``forward`` gives what training
needs, ``estimate`` the expected rate at any tau, and real coding lives in
:mod:`nlic.coding`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlic.codecs.base import LossyCodec
from nlic.residual.mixture import MixtureParams, bin_edges, joint_log_likelihood
from nlic.residual.network import ResidualNetwork
from nlic.residual.patches import PATCH, patchify, unpatchify
from nlic.residual.quantizer import quantize_residual

LN2 = math.log(2.0)


def lossy_to_uint8(x_tilde: Tensor) -> Tensor:
    """Lossy image in [0, 1] -> integer-valued float tensor in [0, 255] (the decoder's x_hat)."""
    return torch.clamp(torch.round(x_tilde * 255.0), 0.0, 255.0)


def channel_last(t: Tensor) -> Tensor:
    return t.permute(0, 2, 3, 1)


def _fp32(x: Tensor) -> torch.autocast:
    """Autocast off: likelihoods are computed in float32 even under ``bf16-mixed`` training."""
    return torch.autocast(device_type=x.device.type, enabled=False)


class NearLosslessCodec(nn.Module):
    """Joint lossy image + residual codec (DLPR).

    Args:
        lossy: any :class:`~nlic.codecs.base.LossyCodec`.
        residual: the residual network (context model, plain head, optional tau head).
    """

    def __init__(self, lossy: LossyCodec, residual: ResidualNetwork) -> None:
        super().__init__()
        self.lossy = lossy
        self.residual = residual
        if residual.head.hidden[0].in_features != lossy.feature_channels + residual.context.channels:
            raise ValueError("residual network input width does not match the lossy feature channels")

    @property
    def pad_multiple(self) -> int:
        return max(self.lossy.pad_multiple, PATCH)

    # ------------------------------------------------------------------ training
    def _context(self, r: Tensor) -> Tensor:
        """Masked context of a full ``[B, 3, H, W]`` residual, patches independent, channel-last."""
        B, _, H, W = r.shape
        ctx = self.residual.context(patchify(r))
        return channel_last(unpatchify(ctx, B, H, W))

    def _bits(self, raw: Tensor, value: Tensor, context: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        """Per-image bits ``[B]`` of channel-last residuals ``value`` under the mixture of ``raw``
        (``context``: the values the R->G->B coupling conditions on); float32 even under autocast."""
        with _fp32(raw):
            params = MixtureParams.from_raw(raw.float(), self.residual.mixtures)
            ll = joint_log_likelihood(params, value, context, lo, hi)
        return -ll.flatten(1).sum(1) / LN2

    def forward(self, x: Tensor, bias_tau: Tensor | None = None) -> dict:
        """Training pass.

        Args:
            x: integer-valued float image ``[B, 3, H, W]`` in [0, 255], H, W multiples of 64.
            bias_tau: optional per-item tau (ints in 1..5) for the bias-correction head's loss.

        Returns a dict with the lossy output, ``x_hat`` (the decoder's integer lossy image),
        per-image residual bits ``residual_bits`` ``[B]`` and, with ``bias_tau``,
        ``bias_bits`` ``[B]`` (the tau head's cost of the original residual).
        """
        out = self.lossy(x / 255.0)
        x_hat = lossy_to_uint8(out["x_hat"].float()).detach()
        r = x - x_hat
        features = channel_last(out["features"])
        r_cl = channel_last(r)
        lo_b, hi_b = channel_last(-x_hat), channel_last(255.0 - x_hat)
        lo, hi = bin_edges(r_cl, 0, lo_b, hi_b)
        raw = self.residual.head(torch.cat([features, self._context(r)], dim=-1))
        out["x_hat_int"] = x_hat
        out["residual_bits"] = self._bits(raw, r_cl, r_cl, lo, hi)
        if bias_tau is not None and self.residual.tau_head is not None:
            tau_b = bias_tau.view(-1, 1, 1, 1).to(r.dtype)
            r_q = quantize_residual(r, tau_b)
            with torch.no_grad():
                ctx_q = self._context(r_q)
            raw_t = self.residual.tau_head(
                torch.cat([features.detach(), ctx_q], dim=-1), bias_tau.view(-1, 1, 1).long()
            )
            out["bias_bits"] = self._bits(raw_t, r_cl, channel_last(r_q), lo, hi)
        return out

    # ---------------------------------------------------------------- estimation
    def head_for(self, tau: int) -> str:
        """Which head codes a given tau: ``plain`` (tau 0 or no bias correction) or ``tau``."""
        return "tau" if tau > 0 and self.residual.tau_head is not None else "plain"

    @torch.no_grad()
    def estimate(self, x: Tensor, tau: int) -> dict:
        """Expected bits at ``tau`` with the same context and head the real coder uses.

        Returns ``latent_bits`` and ``residual_bits`` (``[B]``) and the reconstruction ``x_rec``.
        """
        out = self.lossy(x / 255.0)
        latent_bits = sum(
            -torch.log(lk.clamp_min(1e-9)).flatten(1).sum(1) / LN2 for lk in out["likelihoods"].values()
        )
        x_hat = lossy_to_uint8(out["x_hat"].float())
        r = x - x_hat
        r_q = quantize_residual(r, tau)
        features = channel_last(out["features"])
        raw = self.residual.raw_params(features, self._context(r_q), tau)
        lo_b = channel_last(quantize_residual(-x_hat, tau))
        hi_b = channel_last(quantize_residual(255.0 - x_hat, tau))
        rq_cl = channel_last(r_q)
        lo, hi = bin_edges(rq_cl, tau, lo_b, hi_b)
        x_rec = torch.clamp(x_hat + r_q, 0, 255)
        return {
            "latent_bits": latent_bits,
            "residual_bits": self._bits(raw, rq_cl, rq_cl, lo, hi),
            "x_rec": x_rec,
            "x_hat": x_hat,
        }


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad ``[B, C, H, W]`` on the bottom/right to a multiple of ``multiple``."""
    H, W = x.shape[-2:]
    ph, pw = (-H) % multiple, (-W) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")
