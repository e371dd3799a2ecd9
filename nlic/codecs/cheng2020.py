"""Discretized Gaussian-mixture codec with attention (Cheng et al. 2020, "Learned image compression
with discretized Gaussian mixture likelihoods and attention modules").

Transforms and hyperprior are CompressAI's ``Cheng2020Attention`` ones (residual blocks, attention,
sub-pixel upsampling; latent channels = ``N``).  ``y`` is modelled by a K-component discretized
Gaussian mixture.  CompressAI has no mixture entropy coder, so :class:`GaussianMixtureLatentCodec`
codes the integer symbols with ``constriction``'s range coder and per-symbol categorical tables
computed from the mixture (:func:`gmm_pmf_rows`).

Deviation from the paper: instead of Cheng's serial 5x5 autoregressive context, the context is the
two-pass checkerboard of He et al. 2021 (CompressAI's ``CheckerboardLatentCodec``), so both passes
decode in parallel.  Because the mixture quantizes ``y`` to ``round(y)`` (no mean offset), the
eval-mode ``forward`` reproduces the decoder exactly.
"""

from __future__ import annotations

import struct
import warnings
from typing import Any

import constriction
import numpy as np
import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.latent_codecs import (
    CheckerboardLatentCodec,
    HyperLatentCodec,
    HyperpriorLatentCodec,
    LatentCodec,
)
from compressai.layers import CheckerboardMaskedConv2d, subpel_conv3x3
from compressai.models import Cheng2020Attention
from compressai.ops import LowerBound
from torch import Tensor

from nlic.codecs._layers import LatentCodecModel, entropy_parameters

#: max. number of float64 entries of one probability table chunk (bounds coding memory)
_CHUNK_ENTRIES = 1 << 22


def _std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * torch.erfc(-(2**-0.5) * x)


def gmm_likelihood(y_hat: Tensor, weights: Tensor, means: Tensor, scales: Tensor) -> Tensor:
    """P(y_hat) under a discretized Gaussian mixture (unit bins); params are ``[B, K, C, H, W]``."""
    values = (y_hat.unsqueeze(1) - means).abs()
    upper = _std_normal_cdf((0.5 - values) / scales)
    lower = _std_normal_cdf((-0.5 - values) / scales)
    return (weights * (upper - lower)).sum(1)


def gmm_pmf_rows(weights: Tensor, means: Tensor, scales: Tensor, low: Tensor, size: int) -> np.ndarray:
    """Probability rows of the discretized mixture over the integers ``low + [0, size)``.

    ``weights/means/scales`` are ``[n, K]`` float64, ``low`` is ``[n]``.  The first and last bins
    take the lower and upper tails, so every row sums to one.  Returns an ``[n, size]`` array.
    """
    edges = low[:, None] + 0.5 + torch.arange(size - 1, dtype=low.dtype)  # [n, size-1]
    z = (edges[:, None, :] - means[:, :, None]) / scales[:, :, None]  # [n, K, size-1]
    cdf = (weights[:, :, None] * _std_normal_cdf(z)).sum(1)
    cdf = torch.cat([cdf.new_zeros(len(cdf), 1), cdf, cdf.new_ones(len(cdf), 1)], dim=1)
    return torch.diff(cdf, dim=1).clamp_min_(0.0).numpy()


class GaussianMixtureLatentCodec(LatentCodec):
    """Latent codec for ``y`` with a K-component discretized Gaussian mixture (Cheng 2020).

    ``ctx_params`` holds ``3 K C`` channels: mixture logits, means and scales (each ``K C``,
    component-major).  Real coding: ``y_hat = round(y)``; each symbol is coded relative to the rounded
    mixture mean ``c`` with a categorical table over ``c + [-R, R]`` whose edge bins take the tails.
    ``R`` (max. ``|y_hat - c|`` of the tensor, at least 1, at most ``max_radius``) is a 2-byte header
    of the string; symbols beyond ``max_radius`` are clamped (with a warning).
    """

    def __init__(
        self, K: int = 3, scale_bound: float = 0.11, likelihood_bound: float = 1e-9, max_radius: int = 1024
    ) -> None:
        super().__init__()
        if not 1 <= max_radius < 2**16:
            raise ValueError(f"max_radius must be in [1, 65535], got {max_radius}")
        self.K = K
        self.max_radius = max_radius
        self.lower_bound_scale = LowerBound(scale_bound)
        self.likelihood_lower_bound = LowerBound(likelihood_bound)
        self._family = constriction.stream.model.Categorical(perfect=False)

    def _params(self, ctx_params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, CH, H, W = ctx_params.shape
        logits, means, scales = ctx_params.reshape(B, 3, self.K, CH // (3 * self.K), H, W).unbind(1)
        return torch.softmax(logits, dim=1), means, self.lower_bound_scale(scales)

    def forward(self, y: Tensor, ctx_params: Tensor) -> dict[str, Any]:
        if self.training:
            y_hat = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        else:
            y_hat = torch.round(y)
        likelihoods = self.likelihood_lower_bound(gmm_likelihood(y_hat, *self._params(ctx_params)))
        return {"likelihoods": {"y": likelihoods}, "y_hat": y_hat}

    def _tables(self, weights: Tensor, means: Tensor, scales: Tensor):
        """Per-element (weights, means, scales) as ``[n, K]`` float64 and the rounded mixture means."""
        w, m, s = (t.detach().reshape(self.K, -1).t().double().cpu() for t in (weights, means, scales))
        return w, m, s, torch.round((w * m).sum(1))

    def _chunks(self, n: int, radius: int):
        step = max(1, _CHUNK_ENTRIES // (self.K * (2 * radius + 1)))
        return [slice(i, min(n, i + step)) for i in range(0, n, step)]

    def compress(self, y: Tensor, ctx_params: Tensor) -> dict[str, Any]:
        weights, means, scales = self._params(ctx_params)
        strings, y_hats = [], []
        for b in range(y.size(0)):
            w, m, s, center = self._tables(weights[b], means[b], scales[b])
            dev = torch.round(y[b].detach().reshape(-1).double().cpu()) - center
            need = int(dev.abs().max().item()) if dev.numel() else 0
            if need > self.max_radius:
                warnings.warn(f"GMM coder: clamping latents {need} away from the mean to {self.max_radius}",
                              stacklevel=2)
            radius = min(max(need, 1), self.max_radius)
            index = (dev.clamp(-radius, radius) + radius).to(torch.int32)
            low = center - radius
            encoder = constriction.stream.queue.RangeEncoder()
            for sl in self._chunks(len(index), radius):
                probs = gmm_pmf_rows(w[sl], m[sl], s[sl], low[sl], 2 * radius + 1)
                encoder.encode(index[sl].numpy(), self._family, probs)
            strings.append(struct.pack("<H", radius) + encoder.get_compressed().tobytes())
            y_hats.append((low + index).to(y.dtype).reshape(y[b].shape).to(y.device))
        return {"strings": [strings], "shape": y.shape[2:4], "y_hat": torch.stack(y_hats)}

    def decompress(
        self, strings: list[list[bytes]], shape: tuple[int, int], ctx_params: Tensor, **kwargs: Any
    ) -> dict[str, Any]:
        (y_strings,) = strings
        weights, means, scales = self._params(ctx_params)
        y_hats = []
        for b, string in enumerate(y_strings):
            w, m, s, center = self._tables(weights[b], means[b], scales[b])
            (radius,) = struct.unpack("<H", string[:2])
            low = center - radius
            decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(string[2:], dtype=np.uint32))
            index = torch.empty(len(center), dtype=torch.float64)
            for sl in self._chunks(len(center), radius):
                probs = gmm_pmf_rows(w[sl], m[sl], s[sl], low[sl], 2 * radius + 1)
                index[sl] = torch.from_numpy(decoder.decode(self._family, probs).astype(np.float64))
            y_hats.append((low + index).to(ctx_params.dtype).reshape(means.shape[2:]))
        return {"y_hat": torch.stack(y_hats).to(ctx_params.device)}


class Cheng2020GMM(LatentCodecModel):
    """Cheng 2020 attention codec with K-Gaussian-mixture likelihoods (checkerboard context).

    Args:
        N: channels of the transforms and of the latents ``y`` and ``z`` (paper: 128 / 192).
        K: number of mixture components (paper: 3).
        feature_channels: channels of the feature map ``u`` handed to the residual coder.
        max_radius: largest coded distance of a symbol from its mixture mean (see
            :class:`GaussianMixtureLatentCodec`).
    """

    pad_multiple = 64

    def __init__(self, N: int = 64, K: int = 3, feature_channels: int = 32, max_radius: int = 1024) -> None:
        super().__init__(feature_channels=feature_channels)
        self.N, self.M, self.K = N, N, K
        ref = Cheng2020Attention(N)  # donor of CompressAI's g_a, g_s, h_a, h_s
        self.g_a = ref.g_a
        self.g_s = ref.g_s
        self.g_s[-1] = subpel_conv3x3(N, 3 + feature_channels, 2)
        self.latent_codec = HyperpriorLatentCodec(
            latent_codec={
                "y": CheckerboardLatentCodec(
                    latent_codec={"y": GaussianMixtureLatentCodec(K=K, max_radius=max_radius)},
                    entropy_parameters=entropy_parameters(4 * N, 3 * K * N),
                    context_prediction=CheckerboardMaskedConv2d(N, 2 * N, kernel_size=5, stride=1, padding=2),
                    forward_method="onepass",
                ),
                "hyper": HyperLatentCodec(entropy_bottleneck=EntropyBottleneck(N), h_a=ref.h_a, h_s=ref.h_s),
            }
        )

    def _y_shape(self, h: int, w: int) -> tuple[int, ...]:
        return (self.N, h, w)


__all__ = ["Cheng2020GMM", "GaussianMixtureLatentCodec", "gmm_likelihood", "gmm_pmf_rows"]
