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

from compressai.entropy_models import GaussianConditional
from compressai.latent_codecs import RasterScanLatentCodec
from compressai.layers import MaskedConv2d

from nlic.codecs._layers import LatentCodecModel, entropy_parameters, hyperprior, mean_scale_hyper_transforms


class JointAutoregressiveHyperprior(LatentCodecModel):
    """Minnen 2018 joint autoregressive/hierarchical prior codec with a feature head; paper ``N``
    192, ``M`` 192 / 320."""

    pad_multiple = 64

    def __init__(self, N: int = 64, M: int = 96, feature_channels: int = 32) -> None:
        super().__init__(feature_channels=feature_channels)
        self._autoencoder(N, M)
        y = RasterScanLatentCodec(
            gaussian_conditional=GaussianConditional(None),
            entropy_parameters=entropy_parameters(4 * M, 2 * M),
            context_prediction=MaskedConv2d(M, 2 * M, kernel_size=5, padding=2, stride=1),
        )
        self.latent_codec = hyperprior(y, N, *mean_scale_hyper_transforms(N, M))


__all__ = ["JointAutoregressiveHyperprior"]
