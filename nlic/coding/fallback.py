"""The stored fallback of a tile: its tau-quantized samples without any model.

Every tile is coded twice in effect: the learned code, and this plain one; the encoder keeps the
smaller (:mod:`nlic.coding.image`).  So no content, however adversarial, costs more than this plus
a few bytes of framing: ``ceil(log2(levels))`` bits per sample at most, where
``levels = ceil(256 / (2*tau+1))`` (8 bits at tau = 0, 5 at tau = 2).

Quantizer: sample ``x`` -> level ``k = x // (2*tau+1)``, reconstructed as the middle of its bin
(``k*(2*tau+1) + tau``, the last bin clipped to [k*(2*tau+1), 255]): error at most tau.
Two codes of the level plane are tried: a uniform code over the levels (constriction's range
coder) and a PNG (zlib), which wins on flat or repetitive tiles; zlib's slower levels only where its
fastest comes close to the learned code (see PNG_FAST_MARGIN).
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
#: zlib's fastest level takes a quarter of the default's time (0.02 against 0.06-0.12 s a 512-pixel
#: tile, some 7 % of the encoding at tau = 0) and came within 1.02-1.3x of the best level on 512-pixel
#: tiles of photos and scikit-image's test images (2.05x on a checkerboard and a line drawing): the
#: slower levels are only tried where the fastest comes within this factor of the size to beat.  On
#: photos the learned code is 1.6x smaller even at tau = 0, so the PNG stops at the fastest level; a
#: tile never costs more than its uniform code or that PNG
PNG_FAST_MARGIN = 1.4


def encode(samples: np.ndarray, tau: int, beat: int | None = None) -> tuple[int, bytes, np.ndarray]:
    """The smaller stored code of ``samples`` (``h x w x c`` uint8): ``(kind, data, reconstruction)``.

    ``beat``: the size of the code it competes with (the learned one); the uniform code is only
    made where it could be smaller than that, zlib's default level only where its fastest comes
    within ``PNG_FAST_MARGIN`` of it, level 9 only where the default level's PNG comes within
    ``PNG_RETRY_MARGIN`` (all of them without ``beat``).
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
    png = None if beat is None else imagecodecs.png_encode(plane, level=1)
    if png is None or len(png) <= PNG_FAST_MARGIN * beat:
        default = imagecodecs.png_encode(plane, level=6)
        png = default if png is None else min(png, default, key=len)
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
