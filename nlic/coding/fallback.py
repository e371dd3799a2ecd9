"""The stored fallback of a tile: its tau-quantized samples without any model.

Every tile is coded twice in effect: the learned code, and this plain one; the encoder keeps the
smaller (:mod:`nlic.coding.image`).  So no content, however adversarial, costs more than this plus
a few bytes of framing: ``ceil(log2(levels))`` bits per sample at most, where
``levels = ceil(256 / (2*tau+1))`` (8 bits at tau = 0, 5 at tau = 2).

Quantizer: sample ``x`` -> level ``k = x // (2*tau+1)``, reconstructed as the middle of its bin
(``k*(2*tau+1) + tau``, the last bin clipped to [k*(2*tau+1), 255]): error at most tau.
Codes of the level plane tried: a uniform code over the levels (constriction's range coder), a
PNG (zlib), which wins on flat or repetitive tiles (zlib's slower levels only where its fastest comes
close to the learned code, see PNG_FAST_MARGIN), and where the encoder asks for it and the PNG comes
close, JPEG XL lossless (libjxl's modular mode).  At tau = 0 the encoder also codes the whole image as
JPEG XL and keeps that instead of the tiles where it is smaller: it fits a context tree to the image
and beats the learned code on some photos (see JXL_EFFORT; the early choice from the largest tiles:
``nlic.coding.image.JXL_PROBE_SHARE``).
"""

from __future__ import annotations

import imagecodecs
import numpy as np

from nlic.bitstream.container import STORED_JXL, STORED_PNG, STORED_UNIFORM
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
#: JPEG XL lossless effort: at tau = 0 effort 7 coded 7 of the 10 validation photos and all 4 samples
#: in fewer bytes than the learned code (by up to 11 %, photos with large flat or posterised areas,
#: where its per-image context tree pays), effort 5 far fewer (its files 4-15 % larger); it costs
#: about 1.1 s/MP of one core, effort 9 five times that for 1-3 % less
JXL_EFFORT = 7


def jxl_encode(level: np.ndarray, threads: int = 1) -> bytes:
    """A level plane (``h x w x c`` uint8) as a JPEG XL lossless codestream at JXL_EFFORT (the
    encoder's whole image at tau = 0, :meth:`nlic.coding.image.ImageCodec.compress`, or a tile)."""
    plane = np.ascontiguousarray(level[..., 0] if level.shape[2] == 1 else level)
    return bytes(imagecodecs.jpegxl_encode(plane, lossless=True, effort=JXL_EFFORT, numthreads=threads))


def _jxl_worth_trying(png_fast: bytes | None, beat: int | None) -> bool:
    """A tile is tried as JPEG XL where its fastest PNG came within PNG_FAST_MARGIN of the learned
    code (content unlike photos); on photos the encoder tries the whole image instead, at tau = 0
    only (at larger tau the learned code is 1.5x smaller than any lossless code of the levels)."""
    return beat is None or png_fast is None or len(png_fast) <= PNG_FAST_MARGIN * beat


def encode(samples: np.ndarray, tau: int, beat: int | None = None,
           jxl: bool = False) -> tuple[int, bytes, np.ndarray]:
    """The smallest stored code of ``samples`` (``h x w x c`` uint8): ``(kind, data, reconstruction)``.

    ``beat``: the size of the code it competes with (the learned one); the uniform code is only
    made where it could be smaller than that, zlib's default level only where its fastest comes
    within ``PNG_FAST_MARGIN`` of it, level 9 only where the default level's PNG comes within
    ``PNG_RETRY_MARGIN`` (all of them without ``beat``).  ``jxl``: JPEG XL lossless is a candidate
    too, where :func:`_jxl_worth_trying`.
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
    try_jxl = jxl and _jxl_worth_trying(png, beat)
    if png is None or len(png) <= PNG_FAST_MARGIN * beat:
        default = imagecodecs.png_encode(plane, level=6)
        png = default if png is None else min(png, default, key=len)
    if beat is None or len(png) <= PNG_RETRY_MARGIN * beat:
        png = min(png, imagecodecs.png_encode(plane, level=9), key=len)
    rec = reconstruct(level, tau)
    codes = ([] if uniform is None else [(STORED_UNIFORM, uniform)]) + [(STORED_PNG, bytes(png))]
    if try_jxl:  # one thread: the encoder already codes a tile per core
        codes.append((STORED_JXL, jxl_encode(level)))
    kind, data = min(codes, key=lambda code: len(code[1]))  # the first on a tie (as before JPEG XL)
    return kind, data, rec


def png_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` from a PNG's IHDR chunk (None: not a PNG)."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")


#: JPEG XL's SizeHeader: U32 distributions of a dimension, and the aspect ratios (ISO/IEC 18181-1 D.2)
_JXL_U32_BITS = (9, 13, 18, 30)
_JXL_RATIOS = ((1, 1), (12, 10), (4, 3), (3, 2), (16, 9), (5, 4), (2, 1))
#: U32 distributions (value offset, bits) of the ImageMetadata fields read before its extra channels
_JXL_BIT_DEPTH = ((8, 0), (10, 0), (12, 0), (1, 6))
_JXL_FLOAT_DEPTH = ((32, 0), (16, 0), (24, 0), (1, 6))
_JXL_EXTRA_CHANNELS = ((0, 0), (1, 0), (2, 4), (1, 12))
_JXL_PREVIEW_DIV8 = ((16, 0), (32, 0), (1, 5), (33, 9))
_JXL_PREVIEW = ((1, 6), (65, 8), (321, 10), (1345, 12))
_JXL_TICKS = (((100, 0), (1000, 0), (1, 10), (1, 30)), ((1, 0), (1001, 0), (1, 8), (1, 10)),
              ((0, 0), (0, 3), (0, 16), (0, 32)))
#: the header bytes read: enough for every field up to the extra channels, whatever their encodings
_JXL_HEADER_BYTES = 64


def _jxl_header(data: bytes) -> tuple[int, int, int] | None:
    """``(height, width, extra channels)`` of a bare JPEG XL codestream, from its SizeHeader and the
    start of its ImageMetadata (ISO/IEC 18181-1 D.2, A.6; None: not a codestream).  The decoder
    reads both before decoding: a crafted tile must neither claim a larger image than its tile nor
    carry extra channels (thousands, each as large as the image, in a few bytes), which the encoder
    never writes."""
    if len(data) < 3 or data[:2] != b"\xff\x0a":
        return None
    bits, pos = int.from_bytes(data[2 : 2 + _JXL_HEADER_BYTES], "little"), 0  # least significant first

    def read(n: int) -> int:
        nonlocal pos
        pos += n
        return (bits >> (pos - n)) & ((1 << n) - 1)

    def u32(distribution: tuple[tuple[int, int], ...]) -> int:
        offset, n = distribution[read(2)]
        return offset + read(n)

    def size() -> tuple[int, int]:  # SizeHeader
        small = bool(read(1))

        def dimension() -> int:
            return (read(5) + 1) * 8 if small else read(_JXL_U32_BITS[read(2)]) + 1

        height = dimension()
        ratio = read(3)
        if ratio:
            num, den = _JXL_RATIOS[ratio - 1]
            return height, height * num // den
        return height, dimension()

    height, width = size()
    if read(1):  # all_default: no extra channels
        return height, width, 0
    if read(1):  # extra_fields: orientation, intrinsic size, preview, animation
        read(3)
        if read(1):
            size()
        if read(1):  # PreviewHeader: a height, a ratio and, for ratio 0, a width
            dimension = _JXL_PREVIEW_DIV8 if read(1) else _JXL_PREVIEW
            u32(dimension)
            if read(3) == 0:
                u32(dimension)
        if read(1):  # AnimationHeader
            for distribution in _JXL_TICKS:
                u32(distribution)
            read(1)
    if read(1):  # BitDepth: floating-point samples
        u32(_JXL_FLOAT_DEPTH)
        read(4)
    else:
        u32(_JXL_BIT_DEPTH)
    read(1)  # modular_16_bit_buffer_sufficient
    return height, width, u32(_JXL_EXTRA_CHANNELS)


def decode(kind: int, data: bytes, shape: tuple[int, int, int], tau: int) -> np.ndarray:
    """Inverse of :func:`encode` for a tile of ``shape`` (``h, w, c``)."""
    n = levels(tau)
    if kind == STORED_UNIFORM:
        count = int(np.prod(shape))
        level = SymbolDecoder(data).decode_uniform(np.full(count, n, dtype=np.int64)).reshape(shape)
    elif kind in (STORED_PNG, STORED_JXL):
        # the size from the header first: a crafted tile must not make the decoder allocate a huge image
        # (nor, for JPEG XL, every frame of an animation: only the first is decoded)
        if kind == STORED_PNG:
            size = png_size(data)
            header = None if size is None else (*size, 0)
        else:
            header = _jxl_header(data)
        if header is None:
            raise BitstreamError("stored tile cannot be decoded")
        if header[:2] != shape[:2]:
            raise BitstreamError("stored tile does not match its size")
        if header[2]:  # (the encoder never writes extra channels: each would be decoded as large as the tile)
            raise BitstreamError("stored tile has extra channels")
        try:
            level = np.asarray(imagecodecs.png_decode(data) if kind == STORED_PNG
                               else imagecodecs.jpegxl_decode(data, index=0, numthreads=1))  # one frame only
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
