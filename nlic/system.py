"""The near-lossless system: a lossy codec + the residual probability network.

``NearLosslessCodec`` is a plain ``nn.Module`` (no Lightning): ``forward`` gives what training
needs, ``estimate`` the expected rate at any tau, and real coding lives in
:mod:`nlic.coding`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlic.codecs.base import LossyCodec
from nlic.rate import latent_bits, log_likelihood_bits
from nlic.residual.mixture import bin_edges, log_likelihood
from nlic.residual.network import CHANNELS, ContextHead, ResidualNetwork
from nlic.residual.patches import PATCH, patchify, unpatchify
from nlic.residual.quantizer import grid_offsets, quantize_residual, shift_grid


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
        lossy: any :class:`~nlic.codecs.base.LossyCodec` (``lossy=none``: no lossy layer).
        residual: the residual network (plain head, optional tau head).
        relax_lossy: train the lossy layer through the residual rate (DLPR's lambda = 0 model):
            the residual is taken against ``255 * x_tilde + U(-1/2, 1/2)`` instead of the rounded,
            detached lossy image.
    """

    def __init__(self, lossy: LossyCodec, residual: ResidualNetwork, relax_lossy: bool = False) -> None:
        super().__init__()
        self.lossy = lossy
        self.residual = residual
        self.relax_lossy = relax_lossy
        if residual.feature_channels != lossy.feature_channels:
            raise ValueError(f"the residual network expects {residual.feature_channels} feature channels, "
                             f"the lossy codec gives {lossy.feature_channels}")

    @property
    def pad_multiple(self) -> int:
        return max(self.lossy.pad_multiple, PATCH)

    def shifted_grid(self, x: Tensor, x_hat: Tensor, tau: int | Tensor) -> Tensor:
        """``x_hat`` with each 64x64 patch's bin grid moved as the coder moves it at ``tau`` >= 1
        (:mod:`nlic.coding.grid`); ``tau`` may be one per batch item."""
        B, _, H, W = x.shape
        taus = torch.as_tensor(tau).reshape(-1).expand(B).to(torch.long).cpu()
        out = x_hat.clone()
        for t in torch.unique(taus).tolist():
            if t == 0:
                continue
            items = torch.nonzero(taus == t)[:, 0].to(x.device)
            px, xh = patchify(x[items]), patchify(x_hat[items])
            out[items] = unpatchify(shift_grid(xh, grid_offsets(px, xh, t).to(x.device)), len(items), H, W)
        return out

    def context_of(self, r_q: Tensor) -> Tensor:
        """Quantized residuals as the coder's network reads them in format 3 tiles (clamped to the
        bound its integer layers are built for; residuals at tau = 0 are within it already)."""
        limit = self.lossy.residual_limit
        return r_q.clamp(-limit, limit)

    # ------------------------------------------------------------------ rate of a residual
    @staticmethod
    def context(head: ContextHead, r: Tensor) -> Tensor:
        """Context-layer pre-activations of a ``[B, 3, H, W]`` residual, 64x64 patches independent
        (as the coder codes them); channel-last ``[B, H, W, C+3]``."""
        B, _, H, W = r.shape
        pre = head.context_full(patchify(r)).permute(0, 3, 1, 2)
        return channel_last(unpatchify(pre, B, H, W))

    def residual_bits(self, head: ContextHead, features: Tensor | None, context: Tensor, current: Tensor,
                      lo: Tensor, hi: Tensor, tau_index: Tensor | None = None) -> Tensor:
        """Per-image bits ``[B]`` of the bins ``[lo, hi]`` (channel-last ``[B, H, W, 3]``).

        ``context`` ``[B, 3, H, W]`` is what the masked context sees, ``current`` (channel-last) the
        values of the pixel's own earlier channels; float32 even under autocast.
        """
        with _fp32(lo):
            pre = self.context(head, context.float())
            feats = None if features is None else features.float()
            trunk = head.trunk_features(pre, feats, tau_index)
            total = lo.new_zeros(lo.shape[0])
            for c in range(CHANNELS):
                params = head.channel_params(c, trunk, pre, current.float(), tau_index)
                total = total + log_likelihood_bits(log_likelihood(params, lo[..., c], hi[..., c]))
        return total

    def _lossy_pass(self, x: Tensor) -> tuple[dict, Tensor | None]:
        out = self.lossy(x / 255.0)
        features = out.get("features")
        features = channel_last(features) if features is not None and features.shape[1] else None
        return out, features

    # ------------------------------------------------------------------ training
    def forward(self, x: Tensor, bias_tau: Tensor | None = None) -> dict:
        """Training pass.

        Args:
            x: integer-valued float image ``[B, 3, H, W]`` in [0, 255], H, W multiples of 64.
            bias_tau: optional per-item tau (ints in 1..5) for the bias-correction head's loss.

        Returns a dict with the lossy output, ``x_hat_int`` (the decoder's integer lossy image),
        per-image residual bits ``residual_bits`` ``[B]`` and, with ``bias_tau``,
        ``bias_bits`` ``[B]`` (the tau head's cost of the original residual).
        """
        out, features = self._lossy_pass(x)
        x_hat = lossy_to_uint8(out["x_hat"].float()).detach()
        if self.relax_lossy and self.training:
            soft = out["x_hat"].float() * 255.0
            r = x - (soft + torch.empty_like(soft).uniform_(-0.5, 0.5))
        else:
            r = x - x_hat
        r_cl = channel_last(r)
        lo, hi = bin_edges(r_cl, 0, channel_last(-x_hat), channel_last(255.0 - x_hat))
        out["x_hat_int"] = x_hat
        out["residual_bits"] = self.residual_bits(self.residual.head, features, r, r_cl, lo, hi)
        tau_head = self.residual.tau_head
        if bias_tau is not None and tau_head is not None:
            # the tau head learns the ORIGINAL residual from quantized context, on the grids the
            # coder would choose; its inputs are detached so it never changes the main model
            x_hat_t = self.shifted_grid(x, x_hat, bias_tau)
            r_t = r.detach() - (x_hat_t - x_hat)
            r_q = self.context_of(quantize_residual(r_t, bias_tau.view(-1, 1, 1, 1).to(r.dtype)))
            lo_t, hi_t = bin_edges(channel_last(r_t), 0, channel_last(-x_hat_t), channel_last(255.0 - x_hat_t))
            feats = None if features is None else features.detach()
            tau_index = bias_tau.long().clamp(1, tau_head.num_taus) - 1
            out["bias_bits"] = self.residual_bits(tau_head, feats, r_q, channel_last(r_q), lo_t, hi_t, tau_index)
        return out

    # ---------------------------------------------------------------- estimation
    @torch.no_grad()
    def estimate(self, x: Tensor, tau: int) -> dict:
        """Expected bits at ``tau`` with the same context and head the real coder uses.

        Returns ``latent_bits`` and ``residual_bits`` (``[B]``) and the reconstruction ``x_rec``.
        """
        out, features = self._lossy_pass(x)
        x_hat = lossy_to_uint8(out["x_hat"].float())
        if tau > 0:
            x_hat = self.shifted_grid(x, x_hat, tau)
        r_q = quantize_residual(x - x_hat, tau)
        rq_cl = channel_last(r_q)
        lo_b = channel_last(quantize_residual(-x_hat, tau))
        hi_b = channel_last(quantize_residual(255.0 - x_hat, tau))
        lo, hi = bin_edges(rq_cl, tau, lo_b, hi_b)
        head, index = self.residual.head_for(tau)
        tau_index = None if index is None else torch.full((x.shape[0],), index, dtype=torch.long)
        return {
            "latent_bits": latent_bits(out["likelihoods"], x.shape[0], x.device),
            "residual_bits": self.residual_bits(head, features, self.context_of(r_q), self.context_of(rq_cl), lo, hi,
                                                tau_index),
            "x_rec": torch.clamp(x_hat + r_q, 0, 255),
            "x_hat": x_hat,
        }


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Replicate-pad ``[B, C, H, W]`` on the bottom/right to a multiple of ``multiple``."""
    H, W = x.shape[-2:]
    ph, pw = (-H) % multiple, (-W) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")
