"""Lossy-only mode: export, load and evaluate a lossy codec on its own (no residual coder).

Real coding: ``compress_latents`` -> a small self-delimiting byte string (:func:`pack_payload`:
image size, latent shape and the entropy-coded strings, all varint-framed) -> ``decompress_latents``
-> 8-bit image.  bpp counts every byte of that string; PSNR and MS-SSIM are measured on the 8-bit
decoded image.  Results use the near-lossless evaluation's row keys where they apply (no tau).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from nlic.codecs.base import LatentPayload, LossyCodec
from nlic.errors import BitstreamError
from nlic.eval.evaluate import write_results
from nlic.eval.metrics import ms_ssim_uint8, psnr_uint8
from nlic.model_io import load_lossy_model, save_lossy_model  # noqa: F401  (save: re-exported for callers)
from nlic.rate import latent_bits
from nlic.system import lossy_to_uint8, pad_to_multiple

log = logging.getLogger("nlic.eval")

MAGIC = b"NLY1"
#: summary keys averaged over images (``max_err`` is the maximum)
MEAN_KEYS = ("bpp", "bpp_est", "bpsp", "psnr", "ms_ssim", "enc_s_per_mp", "dec_s_per_mp")

# ---------------------------------------------------------------------------- byte strings
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise BitstreamError("truncated lossy bitstream")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def pack_payload(payload: LatentPayload, height: int, width: int) -> bytes:
    """``MAGIC, H, W, len(shape), *shape, len(strings), (len, bytes)*`` (varints)."""
    parts = [MAGIC, _varint(height), _varint(width), _varint(len(payload.shape))]
    parts += [_varint(int(s)) for s in payload.shape]
    parts.append(_varint(len(payload.strings)))
    for s in payload.strings:
        parts += [_varint(len(s)), bytes(s)]
    return b"".join(parts)


def unpack_payload(data: bytes) -> tuple[LatentPayload, int, int]:
    """Inverse of :func:`pack_payload`: ``(payload, height, width)``."""
    if data[: len(MAGIC)] != MAGIC:
        raise BitstreamError("not an nlic lossy bitstream")
    pos = len(MAGIC)
    height, pos = _read_varint(data, pos)
    width, pos = _read_varint(data, pos)
    n, pos = _read_varint(data, pos)
    shape = []
    for _ in range(n):
        v, pos = _read_varint(data, pos)
        shape.append(v)
    n, pos = _read_varint(data, pos)
    strings = []
    for _ in range(n):
        length, pos = _read_varint(data, pos)
        if pos + length > len(data):
            raise BitstreamError("truncated lossy bitstream")
        strings.append(data[pos : pos + length])
        pos += length
    return LatentPayload(strings, shape), height, width


# ---------------------------------------------------------------------------- coding
@torch.no_grad()
def compress_image(codec: LossyCodec, img: np.ndarray) -> bytes:
    """``H x W x 3`` uint8 -> bytes (the image is replicate-padded to the codec's multiple)."""
    H, W = img.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0
    payload = codec.compress_latents(pad_to_multiple(x, codec.pad_multiple))
    return pack_payload(payload, H, W)


@torch.no_grad()
def decompress_image(codec: LossyCodec, data: bytes) -> np.ndarray:
    """Bytes -> ``H x W x 3`` uint8, exactly as a decoder computes it."""
    payload, H, W = unpack_payload(data)
    x_hat = lossy_to_uint8(codec.decompress_latents(payload)["x_hat"])
    return x_hat[0, :, :H, :W].permute(1, 2, 0).to(torch.uint8).numpy()


@torch.no_grad()
def estimated_bits(codec: LossyCodec, img: np.ndarray) -> float:
    """The model's own rate estimate (sum of -log2 likelihoods of the padded image)."""
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0
    out = codec(pad_to_multiple(x, codec.pad_multiple))
    return float(latent_bits(out["likelihoods"], 1).sum())


def evaluate_lossy(model: str | Path | LossyCodec, images: list[tuple[str, np.ndarray]]) -> tuple[list[dict], dict]:
    """Code every image for real; rows ``{image, width, height, bytes, bpp, bpp_est, bpsp, psnr,
    ms_ssim, max_err, enc_s_per_mp, dec_s_per_mp, latent_bytes}`` and their summary."""
    codec = model if isinstance(model, LossyCodec) else load_lossy_model(model)[0]
    codec.eval()
    rows = []
    for i, (name, img) in enumerate(images, 1):
        H, W = img.shape[:2]
        mp = H * W / 1e6
        t0 = time.perf_counter()
        data = compress_image(codec, img)
        enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        rec = decompress_image(codec, data)
        dec = time.perf_counter() - t0
        payload = unpack_payload(data)[0]
        rows.append({
            "image": name, "width": W, "height": H, "bytes": len(data),
            "bpp": 8 * len(data) / (H * W), "bpp_est": estimated_bits(codec, img) / (H * W),
            "bpsp": 8 * len(data) / (3 * H * W), "psnr": psnr_uint8(rec, img), "ms_ssim": ms_ssim_uint8(rec, img),
            "max_err": int(np.abs(rec.astype(np.int16) - img.astype(np.int16)).max()),
            "enc_s_per_mp": enc / mp, "dec_s_per_mp": dec / mp,
            "latent_bytes": sum(len(s) for s in payload.strings),
        })
        r = rows[-1]
        psnr = "inf" if r["psnr"] is None else f"{r['psnr']:.2f}"
        log.info("eval %d/%d %s (%dx%d): %.4f bpp, PSNR %s dB, MS-SSIM %.4f, %.1f s", i, len(images), name, W, H,
                 r["bpp"], psnr, r["ms_ssim"], enc + dec)
    return rows, summarize_lossy(rows)


def summarize_lossy(rows: list[dict]) -> dict:
    """Means over images (PSNR over finite values); ``max_err`` is the worst image's."""
    out: dict = {}
    for key in MEAN_KEYS:
        vals = [r[key] for r in rows if r[key] is not None]
        out[key] = float(np.mean(vals)) if vals else None
    out["max_err"] = max(r["max_err"] for r in rows)
    out["images"] = len(rows)
    return out


def markdown_table_lossy(rows: list[dict]) -> str:
    s = summarize_lossy(rows)
    psnr = "inf" if s["psnr"] is None else f"{s['psnr']:.2f}"
    return (
        "| bpp | bpp (estimated) | PSNR (dB) | MS-SSIM | max err | enc s/MP | dec s/MP |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {s['bpp']:.4f} | {s['bpp_est']:.4f} | {psnr} | {s['ms_ssim']:.4f} | {s['max_err']} | "
        f"{s['enc_s_per_mp']:.2f} | {s['dec_s_per_mp']:.2f} |\n"
    )


def write_lossy_results(rows: list[dict], summary: dict, out_dir: Path) -> None:
    """``eval_results.json`` (``{"mode": "lossy", "rows", "summary"}``), ``.csv`` and ``.md``."""
    write_results(rows, summary, out_dir, markdown=markdown_table_lossy(rows), mode="lossy")
