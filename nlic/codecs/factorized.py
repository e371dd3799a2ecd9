"""Fully factorized prior codec (Ballé et al. 2017, "End-to-end optimized image compression").

The latent ``y`` is coded by CompressAI's non-parametric ``EntropyBottleneck`` (no side
information), so the input only needs to be a multiple of the analysis stride, 16.
"""

from __future__ import annotations

from compressai.entropy_models import EntropyBottleneck
from compressai.latent_codecs import EntropyBottleneckLatentCodec

from nlic.codecs._layers import LatentCodecModel
from nlic.codecs.mean_scale import autoencoder


class FactorizedPrior(LatentCodecModel):
    """Factorized-prior codec (Ballé 2017) with a feature head.

    Args:
        N: channels of the transforms (paper: 128 / 192).
        M: channels of the latent ``y`` (paper: 192 / 320).
        feature_channels: channels of the feature map ``u`` handed to the residual coder.
    """

    pad_multiple = 16

    def __init__(self, N: int = 64, M: int = 96, feature_channels: int = 32) -> None:
        super().__init__(feature_channels=feature_channels)
        self.N, self.M = N, M
        self.g_a, self.g_s = autoencoder(N, M, feature_channels)
        self.latent_codec = EntropyBottleneckLatentCodec(entropy_bottleneck=EntropyBottleneck(M))


__all__ = ["FactorizedPrior"]
