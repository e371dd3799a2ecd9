"""Fully factorized prior codec (Ballé et al. 2017, "End-to-end optimized image compression").

The latent ``y`` is coded by CompressAI's non-parametric ``EntropyBottleneck`` (no side
information), so the input only needs to be a multiple of the analysis stride, 16.
"""

from __future__ import annotations

from compressai.entropy_models import EntropyBottleneck
from compressai.latent_codecs import EntropyBottleneckLatentCodec

from nlic.codecs._layers import LatentCodecModel


class FactorizedPrior(LatentCodecModel):
    """Factorized-prior codec (Ballé 2017) with a feature head; paper ``N`` 128 / 192, ``M`` 192 / 320."""

    pad_multiple = 16

    def __init__(self, N: int = 64, M: int = 96, feature_channels: int = 32) -> None:
        super().__init__(feature_channels=feature_channels)
        self._autoencoder(N, M)
        self.latent_codec = EntropyBottleneckLatentCodec(entropy_bottleneck=EntropyBottleneck(M))


__all__ = ["FactorizedPrior"]
