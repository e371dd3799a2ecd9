"""Binary layout of a .nlic file (little-endian throughout).

::

    magic "NLIC" | version u8 | mode u8 | tau u16 | height u32 | width u32 | tile u16
    | model_id 8 bytes | recon_crc u32 | n_tiles u32 | extras_len u32
    | n_tiles x tile chunk | extras | payload_crc u32 (crc32 of every byte before it)

tile chunk (formats 2 to 11)::

    kind u8 | length u32 | body

    kind 0, learned:  latents_len u32 | latents (the lossy codec's own payload bytes)
                      | adapt_len u16 | adapt (re-fitted output layers, nlic.coding.adaptation)
                      | residual stream
    kind 1, stored:   the tau-quantized samples, uniform code (see nlic.coding.fallback)
    kind 2, stored:   the tau-quantized samples as a PNG
    kind 3, learned (format 3): as kind 0 with, between adapt and the residual stream,
                      | grid_len u16 | grid (per-patch grid offsets, nlic.coding.grid; none at tau 0)
                      | scales_len u8 | scales (per-channel log-scale offsets, nlic.coding.scales)
                      and the network reads residuals clamped to its bound (Patches.context_limit)
    kind 4, learned (format 4): as kind 3 with ``scales_len u16`` and scales holding the tile's
                      offsets, its mixture sharpness and a delta per 64x64 patch and channel
                      (nlic.coding.scale_fields.pack_patches)
    kind 5, learned (format 5): as kind 4 with, after the deltas, per channel a bit mask of the
                      symbol classes that carry a log-scale offset and a signed byte per such class
                      (nlic.coding.scale_fields.pack_classes)
    kind 6, learned (format 6): as kind 5 (its class offsets all zero where the tile has none)
                      with, after the class offsets, per channel and mean source (the channel
                      before, the one before that, the MED and the W-N average predictors) a
                      one-byte mask of the mean levels that carry a mean offset and a signed byte
                      (1/16 bin) per such level (nlic.coding.scale_fields.pack_means)
    kind 7, learned (format 7): as kind 6 with a fifth mean source per channel after those four,
                      the chroma prediction (the pixel's R plus the MED prediction of the channel's
                      difference from R; its mask and offsets zero for R)
    kind 8, learned (format 8): as kind 7 (its class and mean offsets all zero where the tile has
                      none), R's mixtures from the model's grey heads reading the R plane alone
                      (G and B from the colour heads as before)
    kind 9, learned (format 9): as kind 5 with, after the class offsets, per channel and mean
                      source (kind 7's five, the channel's least-squares prediction, and the errors
                      of its W and N neighbours from theirs and from the network's means) a
                      two-byte mask of the eleven mean levels that carry an offset and a signed byte
                      per such level, the levels cut finer (nlic.coding.scales.FINE_MEAN_LIMITS);
                      then a flags byte (1: R's mixtures from the grey heads, as kind 8) and the
                      least-squares coefficients of the channels whose least-squares sources
                      have offsets
                      (a byte with a bit per such channel, then their int16 coefficients;
                      nlic.coding.least_squares)
    kind 10, stored (format 10): the tau-quantized samples as a JPEG XL lossless codestream
    kind 11, learned (format 11): as kind 9 with, after the least-squares coefficients, per channel
                      an eight-byte mask of the 64 pixel phases (row % 8 * 8 + column % 8 within
                      the tile) that carry a log-scale offset and a signed byte per such phase
                      (nlic.coding.search.choose_phases)

``extras`` holds an optional losslessly coded alpha plane.  ``recon_crc`` is the crc32 of the
reconstruction the encoder computed: a decoder that diverged would be caught instead of writing a
wrong image.  A file carries the lowest version its tiles need: format 2 files (no kind 3 or 4),
format 3 files (no kind 4), format 4 files (no kind 5), format 5 files (no kind 6), format 6 files
(no kind 7), format 7 files (no kind 8), format 8 files (no kind 9), format 9 files (no kind 10)
and format 10 files (no kind 11) decode as before; format 1 (nlic 0.1, float
probabilities) is refused with a message naming the release that reads it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from nlic.errors import BitstreamError

MAGIC = b"NLIC"
FORMAT_VERSION = 11
#: largest tau a file may carry (same as the encoder's limit)
MAX_TAU = 255
#: largest tile size a header holds (u16, a multiple of 64)
MAX_TILE = 65472
#: largest image a file may describe, in pixels (same as the input limit of nlic.io.read_image),
#: so a small crafted header cannot make the decoder allocate an arbitrarily large image
MAX_PIXELS = 100_000_000
MODES = {0: "RGB", 1: "L", 2: "RGBA", 3: "LA"}
MODE_CODES = {v: k for k, v in MODES.items()}
#: tile kinds
(LEARNED, STORED_UNIFORM, STORED_PNG, LEARNED_V3, LEARNED_V4, LEARNED_V5, LEARNED_V6, LEARNED_V7,
 LEARNED_V8, LEARNED_V9, STORED_JXL, LEARNED_V11) = range(12)
TILE_KINDS = {LEARNED: "learned", STORED_UNIFORM: "stored-uniform", STORED_PNG: "stored-png",
              LEARNED_V3: "learned-v3", LEARNED_V4: "learned-v4", LEARNED_V5: "learned-v5", LEARNED_V6: "learned-v6",
              LEARNED_V7: "learned-v7", LEARNED_V8: "learned-v8", LEARNED_V9: "learned-v9", STORED_JXL: "stored-jxl",
              LEARNED_V11: "learned-v11"}
LEARNED_KINDS = (LEARNED, LEARNED_V3, LEARNED_V4, LEARNED_V5, LEARNED_V6, LEARNED_V7, LEARNED_V8, LEARNED_V9,
                 LEARNED_V11)
#: the file format version each tile kind first appeared in
KIND_VERSION = {LEARNED: 2, STORED_UNIFORM: 2, STORED_PNG: 2, LEARNED_V3: 3, LEARNED_V4: 4, LEARNED_V5: 5,
                LEARNED_V6: 6, LEARNED_V7: 7, LEARNED_V8: 8, LEARNED_V9: 9, STORED_JXL: 10,
                LEARNED_V11: 11}
#: the struct format of the scales field's length, per learned kind that has one
_SCALES_LEN = {LEARNED_V3: "<B", LEARNED_V4: "<H", LEARNED_V5: "<H", LEARNED_V6: "<H", LEARNED_V7: "<H",
               LEARNED_V8: "<H", LEARNED_V9: "<H", LEARNED_V11: "<H"}

_HEADER = struct.Struct("<4sBBHIIH8sIII")
_CRC = struct.Struct("<I")
_CHUNK = struct.Struct("<BI")


@dataclass
class TileChunk:
    """One tile: ``kind`` and its parts (learned tiles: latents, adaptation, grid and log-scale
    offsets, residual; stored: data)."""

    kind: int
    latents: bytes = b""
    adapt: bytes = b""
    residual: bytes = b""
    stored: bytes = b""
    grid: bytes = b""
    scales: bytes = b""

    def pack(self) -> bytes:
        if self.kind in LEARNED_KINDS:
            body = struct.pack("<I", len(self.latents)) + self.latents
            body += struct.pack("<H", len(self.adapt)) + self.adapt
            if self.kind in _SCALES_LEN:
                body += struct.pack("<H", len(self.grid)) + self.grid
                body += struct.pack(_SCALES_LEN[self.kind], len(self.scales)) + self.scales
            body += self.residual
        else:
            body = self.stored
        return _CHUNK.pack(self.kind, len(body)) + body

    @classmethod
    def unpack(cls, buf: memoryview, pos: int, version: int = FORMAT_VERSION) -> tuple[TileChunk, int]:
        try:
            kind, length = _CHUNK.unpack_from(buf, pos)
        except struct.error:
            raise BitstreamError("file is truncated (tile header)") from None
        pos += _CHUNK.size
        if kind not in TILE_KINDS or KIND_VERSION[kind] > version:
            raise BitstreamError(f"unknown tile kind {kind}")
        if pos + length > len(buf):
            raise BitstreamError("file is truncated (tile data)")
        body = bytes(buf[pos : pos + length])
        pos += length
        if kind not in LEARNED_KINDS:
            return cls(kind, stored=body), pos
        try:
            (n_lat,) = struct.unpack_from("<I", body, 0)
            latents = body[4 : 4 + n_lat]
            at = 4 + n_lat
            (n_adapt,) = struct.unpack_from("<H", body, at)
            adapt = body[at + 2 : at + 2 + n_adapt]
            at += 2 + n_adapt
            grid = log_scales = b""
            if kind in _SCALES_LEN:
                (n_grid,) = struct.unpack_from("<H", body, at)
                grid = body[at + 2 : at + 2 + n_grid]
                at += 2 + n_grid
                length_field = struct.Struct(_SCALES_LEN[kind])
                (n_scales,) = length_field.unpack_from(body, at)
                log_scales = body[at + length_field.size : at + length_field.size + n_scales]
                at += length_field.size + n_scales
                if len(grid) != n_grid or len(log_scales) != n_scales:
                    raise struct.error
            if len(latents) != n_lat or len(adapt) != n_adapt:
                raise struct.error
        except struct.error:
            raise BitstreamError("file is corrupt (tile layout)") from None
        return cls(kind, latents, adapt, body[at:], grid=grid, scales=log_scales), pos

    def sizes(self) -> dict[str, int]:
        return {"latents": len(self.latents), "adaptation": len(self.adapt),
                "offsets": len(self.grid) + len(self.scales), "residual": len(self.residual),
                "stored": len(self.stored)}


@dataclass
class Container:
    height: int
    width: int
    tau: int
    tile: int
    model_id: bytes
    recon_crc: int
    mode: str = "RGB"
    tiles: list[TileChunk] = field(default_factory=list)
    extras: bytes = b""
    version: int = FORMAT_VERSION

    def to_bytes(self) -> bytes:
        if len(self.model_id) != 8:
            raise ValueError("model_id must be 8 bytes")
        head = _HEADER.pack(
            MAGIC, self.version, MODE_CODES[self.mode], self.tau, self.height, self.width, self.tile,
            self.model_id, self.recon_crc, len(self.tiles), len(self.extras),
        )
        body = head + b"".join(t.pack() for t in self.tiles) + self.extras
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> Container:
        if len(data) == 0:
            raise BitstreamError("file is empty")
        if len(data) < 4 or data[:4] != MAGIC:
            raise BitstreamError("not an nlic file (wrong magic bytes)")
        if len(data) < _HEADER.size + _CRC.size:
            raise BitstreamError("file is truncated (header)")
        (_, version, mode, tau, height, width, tile, model_id, recon_crc, n_tiles, n_extras) = (
            _HEADER.unpack_from(data, 0)
        )
        if version > FORMAT_VERSION:
            raise BitstreamError(
                f"file format version {version} is newer than this nlic supports ({FORMAT_VERSION}); upgrade nlic"
            )
        if version == 1:
            raise BitstreamError(
                "file format 1 was written by nlic 0.1 (float probabilities); this nlic reads formats 2 and 3. "
                "Decode it with nlic 0.1 (pip install 'nlic<0.2') and compress the image again"
            )
        if version < 1:
            raise BitstreamError(f"unknown file format version {version}")
        (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
        if zlib.crc32(data[: -_CRC.size]) != crc:
            raise BitstreamError("checksum mismatch: the file is corrupt or truncated")
        if mode not in MODES:
            raise BitstreamError(f"unknown image mode code {mode}")
        if height == 0 or width == 0 or tile == 0 or tile % 64:
            raise BitstreamError("invalid image or tile size in header")
        if height * width > MAX_PIXELS:
            raise BitstreamError(f"header describes a {width}x{height} image, larger than the "
                                 f"{MAX_PIXELS // 1_000_000} megapixel limit")
        if tau > MAX_TAU:
            raise BitstreamError(f"invalid tau {tau} in header (at most {MAX_TAU})")
        expected_tiles = -(-height // tile) * -(-width // tile)
        if n_tiles != expected_tiles:
            raise BitstreamError(f"header says {n_tiles} tiles, image size implies {expected_tiles}")
        buf = memoryview(data)[: len(data) - _CRC.size]
        pos = _HEADER.size
        tiles = []
        for _ in range(n_tiles):
            chunk, pos = TileChunk.unpack(buf, pos, version)
            tiles.append(chunk)
        if pos + n_extras != len(buf):
            raise BitstreamError("file length does not match its header")
        extras = bytes(buf[pos : pos + n_extras])
        return cls(height, width, tau, tile, bytes(model_id), recon_crc, MODES[mode], tiles, extras, version)

    def part_sizes(self, total: int) -> dict[str, int]:
        """Bytes per part of a file of ``total`` bytes (no re-serialisation)."""
        parts = {k: sum(t.sizes()[k] for t in self.tiles)
                 for k in ("latents", "adaptation", "offsets", "residual", "stored")}
        parts["alpha"] = len(self.extras)
        parts["header"] = total - sum(parts.values())
        parts["total"] = total
        return parts

    def tile_kinds(self) -> dict[str, int]:
        """How many tiles took each path."""
        counts = dict.fromkeys(TILE_KINDS.values(), 0)
        for t in self.tiles:
            counts[TILE_KINDS[t.kind]] += 1
        return counts
