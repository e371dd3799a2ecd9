"""The stored fallback of a tile: its tau-quantized samples without any model.

Every tile is coded twice in effect: the learned code, and this plain one; the encoder keeps the
smaller (:mod:`nlic.coding.image`).  So no content, however adversarial, costs more than this plus
a few bytes of framing: ``ceil(log2(levels))`` bits per sample at most, where
``levels = ceil(256 / (2*tau+1))`` (8 bits at tau = 0, 5 at tau = 2).

Quantizer: sample ``x`` -> level ``k = x // (2*tau+1)``, reconstructed as the middle of its bin
(``k*(2*tau+1) + tau``, the last bin clipped to [k*(2*tau+1), 255]): error at most tau.
Two codes of the level plane are tried: a uniform code over the levels (constriction's range
coder) and a PNG (zlib), which wins on flat or repetitive tiles.
"""

from __future__ import annotations

import imagecodecs
import numpy as np

from nlic.bitstream.container import STORED_PNG, STORED_UNIFORM
from nlic.entropy.range_coder import SymbolDecoder, SymbolEncoder
from nlic.errors import BitstreamError


def levels(tau: int) -> int:
    return -(-256 // (2 * tau + 1))


def quantize(samples: np.ndarray, tau: int) -> np.ndarray:
    """Level of each sample (uint8)."""
    return (samples.astype(np.int32) // (2 * tau + 1)).astype(np.uint8)


def reconstruct(level: np.ndarray, tau: int) -> np.ndarray:
    """Sample values of ``level`` (uint8): the middle of each bin, within [0, 255]."""
    w = 2 * tau + 1
    low = level.astype(np.int32) * w
    high = np.minimum(low + w - 1, 255)
    return ((low + high) // 2).astype(np.uint8)


#: zlib's slowest level saves a few % over its default (3 % on a photo tile), at 8x the time
#: (0.46 s for a 512 x 512 tile; more on smooth ones): it is only tried when the default level
#: comes this close to the size to beat
PNG_RETRY_MARGIN = 1.10


def encode(samples: np.ndarray, tau: int, beat: int | None = None) -> tuple[int, bytes, np.ndarray]:
    """The smaller stored code of ``samples`` (``h x w x c`` uint8): ``(kind, data, reconstruction)``.

    ``beat``: the size of the code it competes with (the learned one); the uniform code is only
    made where it could be smaller than that, zlib level 9 only where the default level's PNG comes
    within ``PNG_RETRY_MARGIN`` of it (both always without ``beat``).
    """
    level = quantize(samples, tau)
    n = levels(tau)
    uniform = None
    # the uniform code takes log2(levels) bits a sample (and a few bytes of flushing): coding it is
    # only worth the time where it could beat the learned code
    if beat is None or level.size * np.log2(n) / 8 - 8 < beat:
        enc = SymbolEncoder()
        flat = level.ravel().astype(np.int64)
        enc.encode_uniform(flat, np.full(flat.shape, n, dtype=np.int64))
        uniform = enc.finish()
    plane = np.ascontiguousarray(level[..., 0] if level.shape[2] == 1 else level)
    png = imagecodecs.png_encode(plane, level=6)
    if beat is None or len(png) <= PNG_RETRY_MARGIN * beat:
        png = min(png, imagecodecs.png_encode(plane, level=9), key=len)
    rec = reconstruct(level, tau)
    if uniform is None or len(png) < len(uniform):
        return STORED_PNG, png, rec
    return STORED_UNIFORM, uniform, rec


def decode(kind: int, data: bytes, shape: tuple[int, int, int], tau: int) -> np.ndarray:
    """Inverse of :func:`encode` for a tile of ``shape`` (``h, w, c``)."""
    n = levels(tau)
    if kind == STORED_UNIFORM:
        count = int(np.prod(shape))
        level = SymbolDecoder(data).decode_uniform(np.full(count, n, dtype=np.int64)).reshape(shape)
    elif kind == STORED_PNG:
        try:
            level = np.asarray(imagecodecs.png_decode(data))
        except Exception:
            raise BitstreamError("stored tile cannot be decoded") from None
        level = level.reshape(level.shape[0], level.shape[1], -1)
        if level.shape != shape or level.dtype != np.uint8:
            raise BitstreamError("stored tile does not match its size")
    else:  # pragma: no cover - the container checks the kind
        raise BitstreamError(f"not a stored tile kind: {kind}")
    if level.size and int(level.max()) >= n:
        raise BitstreamError("stored tile holds a level beyond its tau")
    return reconstruct(level, tau)
