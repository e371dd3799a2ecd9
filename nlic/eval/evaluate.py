"""Code images for real at every tau and measure bpp (actual bytes), PSNR, max error, time."""

from __future__ import annotations

import csv
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from nlic.eval.metrics import psnr_uint8
from nlic.system import pad_to_multiple

log = logging.getLogger("nlic.eval")


def crop_images(images: list[tuple[str, np.ndarray]], crop: int | None) -> list[tuple[str, np.ndarray]]:
    """Centre crops of at most ``crop`` x ``crop`` pixels (``None``: the images unchanged)."""
    if not crop:
        return images
    out = []
    for name, img in images:
        h, w = img.shape[:2]
        ch, cw = min(int(crop), h), min(int(crop), w)
        y, x = (h - ch) // 2, (w - cw) // 2
        out.append((name, np.ascontiguousarray(img[y : y + ch, x : x + cw])))
    return out


def evaluate_model(model_path: str | Path, images: list[tuple[str, np.ndarray]], taus: list[int],
                   tile: int = 512, without_bias_correction: bool = False) -> tuple[list[dict], dict]:
    """Rows ``{image, tau, variant, head, width, height, bytes, bpp, bpp_est, bpsp, psnr, max_err,
    enc_s_per_mp, dec_s_per_mp, latent_bytes, residual_bytes}`` and a summary of means
    per tau; one log line per image.

    ``without_bias_correction``: also code every tau > 0 with the plain head of the same model
    (rows of ``variant`` ``NO_BIAS``; summary keys ``bpp_nobias_tau{t}`` ...): the bias-correction
    ablation on one set of trained weights.

    Every tile keeps the learned code (no stored fallback): the figures are the model's own rate,
    also where a plain PNG would be smaller (``nlic bench`` measures the codec with its fallback).
    """
    from nlic import model_io
    from nlic.api import Codec, load_codec
    from nlic.coding.image import ImageCodec

    codec = load_codec(model_path, tile=tile, stored_fallback=False)
    if images:
        log.info("coder warmed up in %.1f s (compiled code built or loaded once, not counted in the timings)",
                 codec.warm_up(images[0][1], taus))
    rows = _code_images(codec, images, taus)
    summary = summarize(rows)
    if without_bias_correction and codec.image_codec.model.residual.tau_head is not None:
        plain = Codec(ImageCodec(model_io.without_bias_correction(codec.image_codec.loaded), tile=tile,
                                 stored_fallback=False))
        extra = _code_images(plain, images, [t for t in taus if t > 0], variant=NO_BIAS)
        summary.update({k.replace("_tau", "_nobias_tau"): v for k, v in summarize(extra, NO_BIAS).items()})
        rows += extra
    return rows, summary


def _code_images(codec, images: list[tuple[str, np.ndarray]], taus: list[int],
                 variant: str | None = None) -> list[dict]:
    model = codec.image_codec.model
    rows = []
    for i, (name, img) in enumerate(images, 1):
        start = time.perf_counter()
        H, W = img.shape[:2]
        mp = H * W / 1e6
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        for tau in taus:
            t0 = time.perf_counter()
            result = codec.compress(img, tau)
            enc = time.perf_counter() - t0
            data, parts = result.data, result.parts
            t0 = time.perf_counter()
            rec = codec.decompress(data).pixels
            dec = time.perf_counter() - t0
            with torch.no_grad():  # the model's own rate estimate on the padded image
                est = model.estimate(pad_to_multiple(x, model.pad_multiple), tau)
            bits_est = float(est["latent_bits"].sum() + est["residual_bits"].sum())
            max_err = int(np.abs(rec.astype(np.int16) - img.astype(np.int16)).max())
            rows.append({
                "image": name, "tau": tau, "variant": variant or "",
                "head": "tau" if tau and model.residual.tau_head is not None else "plain",
                "width": W, "height": H, "bytes": len(data),
                "bpp": 8 * len(data) / (H * W), "bpp_est": bits_est / (H * W),
                "bpsp": 8 * len(data) / (3 * H * W), "psnr": psnr_uint8(rec, img),
                "max_err": max_err, "bound_ok": max_err <= tau,
                "enc_s_per_mp": enc / mp, "dec_s_per_mp": dec / mp,
                "latent_bytes": parts.get("latents", 0), "residual_bytes": parts.get("residual", 0),
            })
        mine = [r for r in rows if r["image"] == name]
        figures = ", ".join(f"tau {r['tau']} {r['bpp']:.3f} bpp" for r in mine)
        worst = ", ".join(f"BOUND BROKEN at tau {r['tau']} (max err {r['max_err']})" for r in mine if not r["bound_ok"])
        log.info("eval %d/%d %s%s (%dx%d): %s; %s (%.1f s)", i, len(images), name,
                 f" [{variant}]" if variant else "", W, H, figures, worst or "every bound held",
                 time.perf_counter() - start)
    return rows


#: the ``variant`` of rows coded without the bias-correction head
NO_BIAS = "bias_correction_off"


def summarize(rows: list[dict], variant: str = "") -> dict:
    """Means per tau (PSNR over finite values) of the rows of one ``variant``, as ``bpp_tau0`` etc."""
    by_tau: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("variant", "") == variant:
            by_tau[r["tau"]].append(r)
    out: dict = {}
    for tau, rs in sorted(by_tau.items()):
        for key in ("bpp", "bpp_est", "bpsp", "enc_s_per_mp", "dec_s_per_mp"):
            out[f"{key}_tau{tau}"] = float(np.mean([r[key] for r in rs]))
        finite = [r["psnr"] for r in rs if r["psnr"] is not None]
        out[f"psnr_tau{tau}"] = float(np.mean(finite)) if finite else None
        out[f"max_err_tau{tau}"] = max(r["max_err"] for r in rs)
        out[f"bound_ok_tau{tau}"] = all(r["bound_ok"] for r in rs)
    return out


def write_results(rows: list[dict], summary: dict, out_dir: Path, markdown: str | None = None,
                  mode: str | None = None) -> None:
    """``eval_results.json`` (``{"mode"?, "rows", "summary"}``), ``.csv`` (the rows) and ``.md`` (``markdown``,
    default :func:`markdown_table` of the rows)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"mode": mode} if mode else {}
    (out_dir / "eval_results.json").write_text(json.dumps({**doc, "rows": rows, "summary": summary}, indent=2))
    with open(out_dir / "eval_results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "eval_results.md").write_text(markdown if markdown is not None else markdown_table(rows))


def markdown_table(rows: list[dict]) -> str:
    """Means per tau (and per variant) as a markdown table."""
    lines = ["| variant | tau | bpp | bpp (estimated) | bpsp | PSNR (dB) | max err | enc s/MP | dec s/MP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for variant in dict.fromkeys(r.get("variant", "") for r in rows):
        s = summarize(rows, variant)
        for t in sorted({r["tau"] for r in rows if r.get("variant", "") == variant}):
            p = s[f"psnr_tau{t}"]
            lines.append(
                f"| {variant or 'model'} | {t} | {s[f'bpp_tau{t}']:.3f} | {s[f'bpp_est_tau{t}']:.3f} | "
                f"{s[f'bpsp_tau{t}']:.3f} | {'inf' if p is None else f'{p:.2f}'} | {s[f'max_err_tau{t}']} | "
                f"{s[f'enc_s_per_mp_tau{t}']:.2f} | {s[f'dec_s_per_mp_tau{t}']:.2f} |"
            )
    return "\n".join(lines) + "\n"
