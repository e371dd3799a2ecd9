"""Binary layout of a .nlic file (little-endian throughout).

::

    magic "NLIC" | version u8 | mode u8 | tau u16 | height u32 | width u32 | tile u16
    | model_id 8 bytes | recon_crc u32 | n_tiles u32 | extras_len u32
    | n_tiles x tile chunk | extras | payload_crc u32 (crc32 of every byte before it)

tile chunk::

    n_strings u8 | n_shape u8 | shape i32 x n_shape | kmin i16 x 3 | kmax i16 x 3
    | lengths u32 x (n_strings + 1) | latent strings | residual stream

``extras`` holds an optional losslessly coded alpha plane.  ``recon_crc`` is the crc32 of the
reconstruction the encoder computed, so a decoder that desynchronises (other hardware, other
library versions) is caught instead of writing a wrong image.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from nlic.errors import BitstreamError

MAGIC = b"NLIC"
FORMAT_VERSION = 1
#: largest tau a file may carry (same as the encoder's limit)
MAX_TAU = 255
#: largest image a file may describe, in pixels (same as the input limit of nlic.io.read_image),
#: so a small crafted header cannot make the decoder allocate an arbitrarily large image
MAX_PIXELS = 100_000_000
MODES = {0: "RGB", 1: "L", 2: "RGBA", 3: "LA"}
MODE_CODES = {v: k for k, v in MODES.items()}

_HEADER = struct.Struct("<4sBBHIIH8sIII")
_CRC = struct.Struct("<I")


@dataclass
class TileChunk:
    latent_strings: list[bytes]
    latent_shape: list[int]
    kmin: list[int]
    kmax: list[int]
    residual: bytes

    def pack(self) -> bytes:
        head = struct.pack("<BB", len(self.latent_strings), len(self.latent_shape))
        head += struct.pack(f"<{len(self.latent_shape)}i", *self.latent_shape)
        head += struct.pack("<3h3h", *self.kmin, *self.kmax)
        lengths = [len(s) for s in self.latent_strings] + [len(self.residual)]
        head += struct.pack(f"<{len(lengths)}I", *lengths)
        return head + b"".join(self.latent_strings) + self.residual

    @classmethod
    def unpack(cls, buf: memoryview, pos: int) -> tuple[TileChunk, int]:
        try:
            n_str, n_shape = struct.unpack_from("<BB", buf, pos)
            pos += 2
            shape = list(struct.unpack_from(f"<{n_shape}i", buf, pos))
            pos += 4 * n_shape
            ks = struct.unpack_from("<3h3h", buf, pos)
            pos += 12
            lengths = struct.unpack_from(f"<{n_str + 1}I", buf, pos)
            pos += 4 * (n_str + 1)
        except struct.error as err:
            raise BitstreamError("file is truncated (tile header)") from err
        parts = []
        for n in lengths:
            if pos + n > len(buf):
                raise BitstreamError("file is truncated (tile data)")
            parts.append(bytes(buf[pos : pos + n]))
            pos += n
        return cls(parts[:-1], shape, list(ks[:3]), list(ks[3:]), parts[-1]), pos

    def sizes(self) -> dict[str, int]:
        return {"latents": sum(len(s) for s in self.latent_strings), "residual": len(self.residual)}


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
                f"file format version {version} is newer than this nlic supports ({FORMAT_VERSION}); "
                "upgrade nlic"
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
            chunk, pos = TileChunk.unpack(buf, pos)
            tiles.append(chunk)
        if pos + n_extras != len(buf):
            raise BitstreamError("file length does not match its header")
        extras = bytes(buf[pos : pos + n_extras])
        return cls(height, width, tau, tile, bytes(model_id), recon_crc, MODES[mode], tiles, extras, version)
