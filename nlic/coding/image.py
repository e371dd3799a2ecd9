"""Image <-> .nlic bytes: independent tiles, each = lossy latents + wavefront-coded residual."""

from __future__ import annotations

import contextlib
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import imagecodecs
import numpy as np
import torch

from nlic.bitstream.container import Container, TileChunk
from nlic.codecs.base import LatentPayload
from nlic.coding.residual import Alphabet, ResidualCoder
from nlic.entropy.range_coder import guard_latent_decoders
from nlic.errors import BitstreamError, NlicError
from nlic.residual.quantizer import bin_width, quantize_residual
from nlic.system import NearLosslessCodec, lossy_to_uint8, pad_to_multiple

MAX_TAU = 255
MISMATCH_HINT = (
    "The file passed its integrity check, so encoder and decoder most likely computed different "
    "probabilities: this happens when they run on different hardware (GPU vs CPU) or library versions; "
    "decode on the same kind of device and nlic/torch versions that encoded it (no image was written)"
)
DEFAULT_TILE = 512
#: torch's float kernels sum in an order that depends on the thread count, so coding always runs on
#: this many threads: a file then decodes on any machine whatever its core count or OMP_NUM_THREADS
CODING_THREADS = 1
#: thread counts a decoder retries with when a file fails its reconstruction check (files written
#: before coding was pinned to CODING_THREADS used the encoding machine's default thread count)
RETRY_THREADS = (2, 4, 8, 16, 3, 6, 12, 32, 64)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` intra-op threads, restoring the caller's setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_tau(tau: int) -> int:
    if isinstance(tau, bool) or not isinstance(tau, (int, np.integer)):
        raise NlicError(f"tau must be an integer, got {tau!r}")
    if not 0 <= int(tau) <= MAX_TAU:
        raise NlicError(f"tau must be between 0 and {MAX_TAU}, got {tau}")
    return int(tau)


def _check_alpha_header(png: bytes, height: int, width: int) -> None:
    """The stored alpha PNG must be an 8-bit grayscale image of the header's size (read from IHDR)."""
    if len(png) < 33 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise BitstreamError("alpha plane cannot be decoded")
    w, h = struct.unpack(">II", png[16:24])
    if (h, w) != (height, width) or png[24] != 8 or png[25] != 0:
        raise BitstreamError("alpha plane does not match the image size")


class DesyncError(BitstreamError):
    """An intact file whose decoding diverged from the encoder's (different float results)."""


@dataclass
class CodingStats:
    encode_s: float = 0.0
    decode_s: float = 0.0
    parts: dict[str, int] = field(default_factory=dict)


class ImageCodec:
    """Compresses uint8 ``H x W x 3`` arrays with a trained :class:`NearLosslessCodec`."""

    def __init__(self, model: NearLosslessCodec, model_id: bytes, tile: int = DEFAULT_TILE,
                 group: int = 64) -> None:
        if tile % 64:
            raise ValueError("tile size must be a multiple of 64")
        self.model = model.eval()
        self.model_id = model_id
        self.tile = tile
        self.coder = ResidualCoder(model.residual, group=group)
        self.last = CodingStats()
        guard_latent_decoders(self.model.lossy)  # corrupt latent strings must not crash CompressAI's decoder

    # ------------------------------------------------------------------ helpers
    def _tiles(self, height: int, width: int, tile: int | None = None):
        tile = tile or self.tile
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                yield y, x, min(tile, height - y), min(tile, width - x)

    def _lossy_decode(self, payload: LatentPayload):
        out = self.model.lossy.decompress_latents(payload)
        return lossy_to_uint8(out["x_hat"]), out["features"]

    # ------------------------------------------------------------------ encode
    @torch.no_grad()
    def compress(self, pixels: np.ndarray, tau: int, alpha: np.ndarray | None = None) -> bytes:
        """Code ``pixels`` on :data:`CODING_THREADS` threads (see there)."""
        with torch_threads(CODING_THREADS):
            return self._compress(pixels, tau, alpha)

    def _compress(self, pixels: np.ndarray, tau: int, alpha: np.ndarray | None = None) -> bytes:
        """Code ``pixels`` (``H x W x 3`` or ``H x W x 1`` / ``H x W`` grayscale, uint8).

        Grayscale is coded through the RGB model with equal channels and decoded back to one
        channel; ``alpha`` (``H x W`` uint8) is stored losslessly beside it.
        """
        tau = check_tau(tau)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
            raise NlicError(f"expected an H x W x 3 (or grayscale) uint8 image, got {pixels.dtype} {pixels.shape}")
        gray = pixels.shape[2] == 1
        if gray:
            pixels = np.repeat(pixels, 3, axis=2)
        mode = ("L" if gray else "RGB") + ("A" if alpha is not None else "")
        extras = b""
        if alpha is not None:
            if alpha.shape != pixels.shape[:2] or alpha.dtype != np.uint8:
                raise NlicError("alpha must be an H x W uint8 plane matching the image")
            extras = imagecodecs.png_encode(np.ascontiguousarray(alpha))
        t0 = time.perf_counter()
        H, W, _ = pixels.shape
        recon = np.empty_like(pixels)
        chunks = []
        for y, x, h, w in self._tiles(H, W):
            tile = torch.from_numpy(np.ascontiguousarray(pixels[y : y + h, x : x + w]))
            chunk, rec = self._encode_tile(tile.permute(2, 0, 1)[None].float(), tau)
            chunks.append(chunk)
            recon[y : y + h, x : x + w] = rec
        if gray:
            recon = np.ascontiguousarray(recon[..., :1])
        container = Container(
            H, W, tau, self.tile, self.model_id, zlib.crc32(recon.tobytes()), mode, chunks, extras
        )
        data = container.to_bytes()
        self.last = CodingStats(encode_s=time.perf_counter() - t0, parts=self.part_sizes(container))
        return data

    def _encode_tile(self, x: torch.Tensor, tau: int) -> tuple[TileChunk, np.ndarray]:
        h, w = x.shape[-2:]
        xp = pad_to_multiple(x, self.model.pad_multiple)
        payload = self.model.lossy.compress_latents(xp / 255.0)
        # decode our own latents: the residual is taken against exactly what the decoder sees
        x_hat, features = self._lossy_decode(payload)
        valid = torch.zeros(1, *xp.shape[-2:], dtype=torch.bool)
        valid[:, :h, :w] = True
        r_hat = quantize_residual((xp - x_hat) * valid[:, None], tau)
        alphabet, stream = self.coder.encode(r_hat, features, x_hat, valid, tau)
        rec = torch.clamp(x_hat + r_hat, 0, 255)[0, :, :h, :w].permute(1, 2, 0)
        chunk = TileChunk(payload.strings, payload.shape, alphabet.kmin, alphabet.kmax, stream)
        return chunk, rec.to(torch.uint8).numpy()

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decompress(self, data: bytes) -> np.ndarray:
        """Decode to ``H x W x 3`` (RGB) or ``H x W x 1`` (grayscale); alpha: :meth:`decompress_full`."""
        return self.decompress_full(data)[0]

    @torch.no_grad()
    def decompress_full(self, data: bytes) -> tuple[np.ndarray, np.ndarray | None, str]:
        """Decode to ``(pixels, alpha or None, mode)`` on :data:`CODING_THREADS` threads; a file that
        does not reproduce the encoder's image is retried with the thread counts of
        :data:`RETRY_THREADS` (older files were coded with the encoding machine's thread count)."""
        with torch_threads(CODING_THREADS):
            try:
                return self._decompress_full(data)
            except DesyncError as first:
                error = first
        for n in dict.fromkeys(t for t in (*RETRY_THREADS, os.cpu_count() or 1) if t != CODING_THREADS):
            with torch_threads(n):
                try:
                    return self._decompress_full(data)
                except DesyncError:
                    continue
        raise error

    def _decompress_full(self, data: bytes) -> tuple[np.ndarray, np.ndarray | None, str]:
        t0 = time.perf_counter()
        c = Container.from_bytes(data)
        if c.model_id != self.model_id:
            raise BitstreamError(
                f"file was encoded with model {c.model_id.hex()}, but the loaded model is "
                f"{self.model_id.hex()}; decode it with the model that encoded it (--model)"
            )
        if c.extras and not c.mode.endswith("A"):  # version 1 stores nothing but alpha there
            raise BitstreamError(f"unexpected extra data in a file of mode {c.mode}")
        if c.mode.endswith("A"):
            _check_alpha_header(c.extras, c.height, c.width)  # before png_decode allocates anything
        out = np.empty((c.height, c.width, 3), dtype=np.uint8)
        # the file's tile size, not this codec's: files coded with any --tile decode
        for (y, x, h, w), chunk in zip(self._tiles(c.height, c.width, c.tile), c.tiles):
            out[y : y + h, x : x + w] = self._decode_tile(chunk, h, w, c.tau)
        if c.mode.startswith("L"):
            out = np.ascontiguousarray(out[..., :1])
        alpha = None
        if c.mode.endswith("A"):
            try:
                alpha = np.asarray(imagecodecs.png_decode(c.extras), dtype=np.uint8)
            except Exception:
                raise BitstreamError("alpha plane cannot be decoded") from None
            if alpha.shape != (c.height, c.width):
                raise BitstreamError("alpha plane does not match the image size")
        if zlib.crc32(out.tobytes()) != c.recon_crc:
            raise DesyncError("decoded image does not match the encoder's reconstruction (checksum mismatch). "
                                 + MISMATCH_HINT)
        self.last = CodingStats(decode_s=time.perf_counter() - t0, parts=self.part_sizes(c))
        return out, alpha, c.mode

    def _decode_tile(self, chunk: TileChunk, h: int, w: int, tau: int) -> np.ndarray:
        m = self.model.pad_multiple
        hp, wp = -(-h // m) * m, -(-w // m) * m
        self._check_chunk(chunk, hp, wp, tau)
        try:
            x_hat, features = self._lossy_decode(LatentPayload(chunk.latent_strings, chunk.latent_shape))
        except Exception as err:
            raise BitstreamError(f"latent stream cannot be decoded ({type(err).__name__})") from None
        if tuple(x_hat.shape[-2:]) != (hp, wp):
            raise BitstreamError("latent shape does not match the image size in the header")
        valid = torch.zeros(1, hp, wp, dtype=torch.bool)
        valid[:, :h, :w] = True
        alphabet = Alphabet(chunk.kmin, chunk.kmax)
        try:
            r_hat = self.coder.decode(chunk.residual, features, x_hat, valid, tau, alphabet)
        except BitstreamError as err:
            # the container's CRC already passed: the bytes are what the encoder wrote
            raise DesyncError(f"{err}. {MISMATCH_HINT}") from None
        rec = torch.clamp(x_hat + r_hat, 0, 255)[0, :, :h, :w].permute(1, 2, 0)
        return rec.to(torch.uint8).numpy()

    def _check_chunk(self, chunk: TileChunk, hp: int, wp: int, tau: int) -> None:
        """Reject tile side info that would make the decoders allocate or loop without bound.

        The latent shape's spatial entries (the first two; the next two too for four-entry
        shapes: ``y`` then hyper-latent size) can be at most the padded tile over stride 16 (or
        over the codec's ``pad_multiple`` when smaller): every lossy codec here codes its latents
        at stride >= 16.  The residual interval must lie within the bins a residual of an 8-bit
        image can fall in at this tau.
        """
        stride = min(16, int(getattr(self.model.lossy, "pad_multiple", 16)))
        shape = chunk.latent_shape
        spatial = shape[:4] if len(shape) == 4 else shape[:2]
        limits = [hp // stride, wp // stride] * 2
        if len(shape) < 2 or any(not 1 <= s <= lim for s, lim in zip(spatial, limits)):
            raise BitstreamError(f"invalid latent shape {shape} for a {wp}x{hp} (padded) tile")
        wbin = bin_width(tau)
        lowest = int(quantize_residual(torch.tensor(-255.0), tau)) // wbin
        highest = int(quantize_residual(torch.tensor(255.0), tau)) // wbin
        if any(not lowest <= lo <= hi <= highest for lo, hi in zip(chunk.kmin, chunk.kmax)):
            raise BitstreamError("invalid residual interval")

    @staticmethod
    def part_sizes(c: Container) -> dict[str, int]:
        latents = sum(t.sizes()["latents"] for t in c.tiles)
        residual = sum(t.sizes()["residual"] for t in c.tiles)
        total = len(c.to_bytes())
        extras = len(c.extras)
        return {"latents": latents, "residual": residual, "alpha": extras,
                "header": total - latents - residual - extras, "total": total}
