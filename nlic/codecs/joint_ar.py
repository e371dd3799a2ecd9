"""Joint autoregressive + hierarchical prior codec (Minnen et al. 2018, NeurIPS).

Mean-scale hyperprior plus a 5x5 masked-convolution context on ``y_hat``, decoded serially in
raster-scan order.  Coding uses CompressAI's ``RasterScanLatentCodec``: the same padded
``_compress_ar``/``_decompress_ar`` loop as ``JointAutoregressiveHierarchicalPriors``, except that both
sides apply the *masked* context weights explicitly (the model's own ``_decompress_ar`` uses the raw
weight, which only matches after a forward pass has re-masked it in place).  Slow: one network call
per latent position, run on the CPU.

In eval mode ``forward`` quantizes ``y`` as ``round(y)`` (CompressAI convention) whereas the coder
uses ``round(y - mu) + mu``, so ``forward`` approximates, but does not equal, the decoded output.
"""

from __future__ import annotations

from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.latent_codecs import HyperLatentCodec, HyperpriorLatentCodec, RasterScanLatentCodec
from compressai.layers import MaskedConv2d

from nlic.codecs._layers import LatentCodecModel, entropy_parameters, mean_scale_hyper_transforms
from nlic.codecs.mean_scale import autoencoder


class JointAutoregressiveHyperprior(LatentCodecModel):
    """Minnen 2018 joint autoregressive/hierarchical prior codec with a feature head.

    Args:
        N: channels of the transforms and of ``z`` (paper: 192).
        M: channels of the latent ``y`` (paper: 192 / 320).
        feature_channels: channels of the feature map ``u`` handed to the residual coder.
    """

    pad_multiple = 64

    def __init__(self, N: int = 64, M: int = 96, feature_channels: int = 32) -> None:
        super().__init__(feature_channels=feature_channels)
        self.N, self.M = N, M
        self.g_a, self.g_s = autoencoder(N, M, feature_channels)
        h_a, h_s = mean_scale_hyper_transforms(N, M)
        self.latent_codec = HyperpriorLatentCodec(
            latent_codec={
                "y": RasterScanLatentCodec(
                    gaussian_conditional=GaussianConditional(None),
                    entropy_parameters=entropy_parameters(4 * M, 2 * M),
                    context_prediction=MaskedConv2d(M, 2 * M, kernel_size=5, padding=2, stride=1),
                ),
                "hyper": HyperLatentCodec(entropy_bottleneck=EntropyBottleneck(N), h_a=h_a, h_s=h_s),
            }
        )


__all__ = ["JointAutoregressiveHyperprior"]
