"""The contract every lossy codec of nlic follows (CompressAI-style).

A lossy codec maps an image ``x`` (float, [0, 1], shape ``B x 3 x H x W`` with H, W multiples of
``pad_multiple``) to a lossy reconstruction ``x_hat`` and a full-resolution feature map ``features``
(``feature_channels`` channels) that conditions the residual coder.  Adding a codec = one module
subclassing :class:`LossyCodec` and one YAML file in ``conf/lossy``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from nlic.errors import BitstreamError


@dataclass
class LatentPayload:
    """Entropy-coded latents of ONE image: a list of byte strings plus integer shape info."""

    strings: list[bytes]
    shape: list[int] = field(default_factory=list)


def unpack_payload(data: bytes) -> LatentPayload:
    """Parse the generic layout of :meth:`LossyCodec.payload_to_bytes` (no semantic checks)."""
    try:
        n_str, n_shape = struct.unpack_from("<BB", data, 0)
        shape = list(struct.unpack_from(f"<{n_shape}i", data, 2))
        pos = 2 + 4 * n_shape
        lengths = struct.unpack_from(f"<{n_str}I", data, pos)
    except struct.error:
        raise BitstreamError("latent payload is truncated") from None
    pos += 4 * n_str
    strings = []
    for n in lengths:
        if pos + n > len(data):
            raise BitstreamError("latent payload is truncated")
        strings.append(bytes(data[pos : pos + n]))
        pos += n
    if pos != len(data):
        raise BitstreamError("latent payload has trailing bytes")
    return LatentPayload(strings, shape)


class LossyCodec(nn.Module):
    """Base class: ``forward`` for training, ``compress``/``decompress`` for real coding.

    Subclasses implement :meth:`forward`, :meth:`compress_latents` and :meth:`decompress_latents`,
    and CompressAI's ``aux_loss()`` / ``update()``: codecs built from CompressAI's entropy models
    inherit them from :class:`~nlic.codecs.compressai_base.CompressAICodec`.  This module does not
    import CompressAI, so a model without a lossy layer codes without loading it.
    ``forward`` returns ``{"x_hat", "features", "likelihoods": {name: Tensor}}``;
    ``decompress_latents`` returns ``{"x_hat", "features"}`` computed exactly as the decoder does.
    """

    #: spatial size the input must be a multiple of (stride of the deepest latent)
    pad_multiple: int = 64
    #: largest |x - x_hat| the residual network reads (the integer network's input bound)
    residual_limit: int = 255
    #: tiles may be coded by several threads at once (CompressAI's entropy coders keep state: no)
    thread_safe: bool = False

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

    def aux_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by :meth:`aux_loss` alone, never by the rate-distortion loss:
        CompressAI's bottleneck quantiles (none for codecs without an ``EntropyBottleneck``)."""
        return [p for name, p in self.named_parameters() if name.rsplit(".", 1)[-1] == "quantiles"]

    @staticmethod
    def split_synthesis(out: Tensor) -> tuple[Tensor, Tensor]:
        """Split a synthesis output into (3-channel image, features)."""
        return out[:, :3], out[:, 3:]

    # -- the payload in a file: each codec owns its bytes and checks them ---------------------------
    def payload_to_bytes(self, payload: LatentPayload) -> bytes:
        """``n_strings u8 | n_shape u8 | shape i32... | lengths u32... | strings``."""
        head = struct.pack("<BB", len(payload.strings), len(payload.shape))
        head += struct.pack(f"<{len(payload.shape)}i", *payload.shape)
        head += struct.pack(f"<{len(payload.strings)}I", *(len(s) for s in payload.strings))
        return head + b"".join(payload.strings)

    def payload_from_bytes(self, data: bytes, height: int, width: int) -> LatentPayload:
        """Inverse of :meth:`payload_to_bytes` for a tile padded to ``height x width``, checked
        (:meth:`check_payload`) before any decoder allocates from it."""
        payload = unpack_payload(data)
        self.check_payload(payload, height, width)
        return payload

    def check_payload(self, payload: LatentPayload, height: int, width: int) -> None:
        """Refuse side information that would make the latent decoders allocate or loop without bound.

        The shape's spatial entries (the first two; the next two too for four-entry shapes: ``y``
        then hyper-latent size) are at most the padded tile over stride 16 (or over
        ``pad_multiple`` when smaller): every lossy codec here codes its latents at stride >= 16.
        """
        stride = min(16, int(self.pad_multiple))
        shape = payload.shape
        spatial = shape[:4] if len(shape) == 4 else shape[:2]
        limits = [height // stride, width // stride] * 2
        if len(shape) < 2 or any(not 1 <= s <= lim for s, lim in zip(spatial, limits)):
            raise BitstreamError(f"invalid latent shape {shape} for a {width}x{height} (padded) tile")

    @torch.no_grad()
    def compress(self, x: Tensor) -> LatentPayload:
        return self.compress_latents(x)

    @torch.no_grad()
    def decompress(self, payload: LatentPayload) -> dict:
        return self.decompress_latents(payload)
