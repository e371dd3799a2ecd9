"""Checkerboard context codec (He et al. 2021, "Checkerboard context model for efficient learned
image compression"), on the Minnen 2018 mean-scale hyperprior backbone.

Two parallel passes (CompressAI's ``CheckerboardLatentCodec``): the anchors are coded with
parameters from the hyperprior alone, then the non-anchors with parameters from the hyperprior plus
a checkerboard-masked 5x5 context of the decoded anchors.  Anchors and non-anchors are gathered
into two half-width tensors and coded as two separate ``GaussianConditional`` strings, so both
passes decode exactly.  Training uses the ``twopass`` forward (STE rounding around the predicted
means), which in eval mode reproduces the decoder's ``y_hat``.
"""

from __future__ import annotations

from compressai.latent_codecs import (
    CheckerboardLatentCodec,
    GaussianConditionalLatentCodec,
)
from compressai.layers import CheckerboardMaskedConv2d

from nlic.codecs._layers import LatentCodecModel, entropy_parameters, hyperprior, mean_scale_hyper_transforms


class CheckerboardHyperprior(LatentCodecModel):
    """He 2021 checkerboard-context codec with a feature head; paper ``N`` 192, ``M`` 192 / 320.

    ``forward_method``: CompressAI's training forward, ``"twopass"`` (default), ``"twopass_faster"``
    or ``"onepass"`` (noise only; eval ``forward`` then differs from the decoder).
    """

    pad_multiple = 64

    def __init__(
        self, N: int = 64, M: int = 96, feature_channels: int = 32, forward_method: str = "twopass"
    ) -> None:
        super().__init__(feature_channels=feature_channels)
        self._autoencoder(N, M)
        y = CheckerboardLatentCodec(
            latent_codec={"y": GaussianConditionalLatentCodec(quantizer="ste")},
            entropy_parameters=entropy_parameters(4 * M, 2 * M),
            context_prediction=CheckerboardMaskedConv2d(M, 2 * M, kernel_size=5, stride=1, padding=2),
            forward_method=forward_method,
        )
        self.latent_codec = hyperprior(y, N, *mean_scale_hyper_transforms(N, M))

    def _y_shape(self, h: int, w: int) -> tuple[int, ...]:
        return (self.M, h, w)


__all__ = ["CheckerboardHyperprior"]
