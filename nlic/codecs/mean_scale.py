"""Mean-scale hyperprior codec (Minnen et al. 2018), the lossy layer DLPR uses.

Built from CompressAI's layers and entropy models; the synthesis transform emits the lossy image
and the full-resolution feature map ``u`` that conditions the residual coder.
"""

from __future__ import annotations

from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from torch import Tensor

from nlic.codecs._layers import autoencoder, mean_scale_hyper_transforms
from nlic.codecs.base import LatentPayload
from nlic.codecs.compressai_base import CompressAICodec


class MeanScaleHyperprior(CompressAICodec):
    """Mean-scale Gaussian hyperprior codec with an extra feature head (``N``, ``M``,
    ``feature_channels`` as in :class:`~nlic.codecs._layers.LatentCodecModel`)."""

    pad_multiple = 64

    def __init__(self, N: int = 64, M: int = 96, feature_channels: int = 32) -> None:
        super().__init__(feature_channels=feature_channels)
        self.N, self.M = N, M
        self.g_a, self.g_s = autoencoder(N, M, feature_channels)
        self.h_a, self.h_s = mean_scale_hyper_transforms(N, M)
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)

    def _synthesize(self, y_hat: Tensor) -> dict:
        x_hat, features = self.split_synthesis(self.g_s(y_hat))
        return {"x_hat": x_hat, "features": features}

    def forward(self, x: Tensor) -> dict:
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales_hat, means=means_hat)
        out = self._synthesize(y_hat)
        out["likelihoods"] = {"y": y_likelihoods, "z": z_likelihoods}
        return out

    def compress_latents(self, x: Tensor) -> LatentPayload:
        y = self.g_a(x)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales_hat)
        y_strings = self.gaussian_conditional.compress(y, indexes, means=means_hat)
        return LatentPayload([y_strings[0], z_strings[0]], list(z.shape[-2:]))

    def decompress_latents(self, payload: LatentPayload) -> dict:
        y_string, z_string = payload.strings
        z_hat = self.entropy_bottleneck.decompress([z_string], payload.shape)
        scales_hat, means_hat = self.h_s(z_hat).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales_hat)
        y_hat = self.gaussian_conditional.decompress([y_string], indexes, means=means_hat)
        return self._synthesize(y_hat)


__all__ = ["MeanScaleHyperprior"]
