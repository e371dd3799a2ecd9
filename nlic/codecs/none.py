"""No lossy layer: ``x_hat`` is mid-grey and nothing is transmitted before the residual.

The residual network then is a pure learned context model of the pixels (the limit of DLPR's
lambda = 0 model, whose lossy image collapses): every bit goes to the residual coder.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nlic.codecs.base import LatentPayload, LossyCodec
from nlic.errors import BitstreamError

#: the constant lossy image, on the [0, 1] scale: round(255 * MID_GREY) = 128
MID_GREY = 128.0 / 255.0


class NoLossyLayer(LossyCodec):
    """The identity of lossy codecs: no latents, no features, ``x_hat`` = 128 everywhere."""

    pad_multiple = 1
    residual_limit = 128  # x - 128 for x in 0..255
    thread_safe = True  # nothing to code: x_hat is a constant

    def __init__(self) -> None:
        super().__init__(feature_channels=0)

    def _constant(self, batch: int, height: int, width: int) -> dict:
        x_hat = torch.full((batch, 3, height, width), MID_GREY)
        return {"x_hat": x_hat, "features": x_hat.new_zeros(batch, 0, height, width)}

    def forward(self, x: Tensor) -> dict:
        out = self._constant(x.shape[0], x.shape[-2], x.shape[-1])
        out = {k: v.to(x.device) for k, v in out.items()}
        out["likelihoods"] = {}
        return out

    def aux_loss(self) -> Tensor:
        return torch.zeros(())

    def update(self, scale_table=None, force: bool = False) -> bool:
        return False

    def compress_latents(self, x: Tensor) -> LatentPayload:
        return LatentPayload([], [int(x.shape[-2]), int(x.shape[-1])])

    def payload_to_bytes(self, payload: LatentPayload) -> bytes:
        return b""  # the tile size is in the file header already

    def payload_from_bytes(self, data: bytes, height: int, width: int) -> LatentPayload:
        if data:
            raise BitstreamError("a model without a lossy layer stores no latents, but the tile has some")
        return LatentPayload([], [height, width])

    def decompress_latents(self, payload: LatentPayload) -> dict:
        height, width = payload.shape
        return self._constant(1, height, width)


__all__ = ["NoLossyLayer"]
