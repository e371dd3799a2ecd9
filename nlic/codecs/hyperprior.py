"""Scale hyperprior codec (Ballé et al. 2018, "Variational image compression with a scale hyperprior").

``y`` is coded with zero-mean Gaussians whose scales come from the hyper-latent ``z = h_a(|y|)``;
built from CompressAI's ``HyperpriorLatentCodec`` (``HyperLatentCodec`` + scale-only
``GaussianConditionalLatentCodec``).
"""

from __future__ import annotations

import torch
from compressai.latent_codecs import (
    GaussianConditionalLatentCodec,
)
from compressai.layers import Lambda
from compressai.models.utils import conv, deconv
from torch import nn

from nlic.codecs._layers import LatentCodecModel, hyperprior


def scale_hyper_transforms(N: int, M: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``h_a`` (applied to ``|y|``) and ``h_s`` (non-negative scales) of Ballé 2018."""
    h_a = nn.Sequential(
        Lambda(torch.abs),
        conv(M, N, stride=1, kernel_size=3), nn.ReLU(inplace=True),
        conv(N, N), nn.ReLU(inplace=True), conv(N, N),
    )
    h_s = nn.Sequential(
        deconv(N, N), nn.ReLU(inplace=True),
        deconv(N, N), nn.ReLU(inplace=True),
        conv(N, M, stride=1, kernel_size=3), nn.ReLU(inplace=True),
    )
    return h_a, h_s


class ScaleHyperprior(LatentCodecModel):
    """Scale-hyperprior codec (Ballé 2018) with a feature head; paper ``N`` 128 / 192, ``M`` 192 / 320."""

    pad_multiple = 64

    def __init__(self, N: int = 64, M: int = 96, feature_channels: int = 32) -> None:
        super().__init__(feature_channels=feature_channels)
        self._autoencoder(N, M)
        self.latent_codec = hyperprior(GaussianConditionalLatentCodec(chunks=("scales",)), N,
                                       *scale_hyper_transforms(N, M))


__all__ = ["ScaleHyperprior", "scale_hyper_transforms"]
