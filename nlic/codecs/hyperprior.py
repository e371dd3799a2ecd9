"""Scale hyperprior codec (Ballé et al. 2018, "Variational image compression with a scale hyperprior").

``y`` is coded with zero-mean Gaussians whose scales come from the hyper-latent ``z = h_a(|y|)``;
built from CompressAI's ``HyperpriorLatentCodec`` (``HyperLatentCodec`` + scale-only
``GaussianConditionalLatentCodec``).
"""

from __future__ import annotations

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.latent_codecs import (
    GaussianConditionalLatentCodec,
    HyperLatentCodec,
    HyperpriorLatentCodec,
)
from compressai.layers import Lambda
from compressai.models.utils import conv, deconv
from torch import nn

from nlic.codecs._layers import LatentCodecModel
from nlic.codecs.mean_scale import autoencoder


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
    """Scale-hyperprior codec (Ballé 2018) with a feature head.

    Args:
        N: channels of the transforms and of ``z`` (paper: 128 / 192).
        M: channels of the latent ``y`` (paper: 192 / 320).
        feature_channels: channels of the feature map ``u`` handed to the residual coder.
    """

    pad_multiple = 64

    def __init__(self, N: int = 64, M: int = 96, feature_channels: int = 32) -> None:
        super().__init__(feature_channels=feature_channels)
        self.N, self.M = N, M
        self.g_a, self.g_s = autoencoder(N, M, feature_channels)
        h_a, h_s = scale_hyper_transforms(N, M)
        self.latent_codec = HyperpriorLatentCodec(
            latent_codec={
                "y": GaussianConditionalLatentCodec(chunks=("scales",)),
                "hyper": HyperLatentCodec(entropy_bottleneck=EntropyBottleneck(N), h_a=h_a, h_s=h_s),
            }
        )


__all__ = ["ScaleHyperprior", "scale_hyper_transforms"]
