"""The contract every lossy codec of nlic follows (CompressAI-style).

A lossy codec maps an image ``x`` (float, [0, 1], shape ``B x 3 x H x W`` with H, W multiples of
``pad_multiple``) to a lossy reconstruction ``x_hat`` and a full-resolution feature map ``features``
(``feature_channels`` channels) that conditions the residual coder.  Adding a codec = one module
subclassing :class:`LossyCodec` and one YAML file in ``conf/lossy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from compressai.models import CompressionModel
from torch import Tensor


@dataclass
class LatentPayload:
    """Entropy-coded latents of ONE image: a list of byte strings plus integer shape info."""

    strings: list[bytes]
    shape: list[int] = field(default_factory=list)


class LossyCodec(CompressionModel):
    """Base class: ``forward`` for training, ``compress``/``decompress`` for real coding.

    Subclasses implement :meth:`forward`, :meth:`compress_latents` and :meth:`decompress_latents`.
    ``forward`` returns ``{"x_hat", "features", "likelihoods": {name: Tensor}}``;
    ``decompress_latents`` returns ``{"x_hat", "features"}`` computed exactly as the decoder does.
    """

    #: spatial size the input must be a multiple of (stride of the deepest latent)
    pad_multiple: int = 64

    def __init__(self, feature_channels: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.feature_channels = feature_channels

    def forward(self, x: Tensor) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def compress_latents(self, x: Tensor) -> LatentPayload:  # pragma: no cover - abstract
        raise NotImplementedError

    def decompress_latents(self, payload: LatentPayload) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def rd_loss(self, bpp: Tensor, mse: Tensor, out: dict, lmbda: float) -> Tensor:
        """Rate-distortion loss of lossy-only training: ``lmbda * 255^2 * MSE + bpp``.

        ``bpp`` is the batch rate, ``mse`` the per-sample MSE on the [0, 1] scale (``B``), ``out``
        what :meth:`forward` returned.  Codecs with their own operating-point rule override it.
        """
        return lmbda * 255.0**2 * mse.mean() + bpp

    @staticmethod
    def split_synthesis(out: Tensor) -> tuple[Tensor, Tensor]:
        """Split a synthesis output into (3-channel image, features)."""
        return out[:, :3], out[:, 3:]

    @torch.no_grad()
    def compress(self, x: Tensor) -> LatentPayload:
        return self.compress_latents(x)

    @torch.no_grad()
    def decompress(self, payload: LatentPayload) -> dict:
        return self.decompress_latents(payload)
