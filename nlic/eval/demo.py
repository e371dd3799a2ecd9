"""The quickstart demo: compress and decompress the shipped demo image through real files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from nlic.api import load_codec
from nlic.data.images import DEMO_IMAGE, load_rgb

log = logging.getLogger("nlic.demo")


def run_demo(model_path: Path, out_dir: Path, taus: tuple[int, ...] = (0, 2)) -> dict:
    codec = load_codec(model_path)
    img = load_rgb(DEMO_IMAGE)
    H, W = img.shape[:2]
    out = {}
    for tau in taus:
        path = out_dir / f"demo_tau{tau}.nlic"
        coded = codec.compress(img, tau)
        path.write_bytes(coded.data)
        rec = load_codec(model_path).decompress(path.read_bytes()).pixels
        err = int(np.abs(rec.astype(int) - img.astype(int)).max())
        bpp = 8 * path.stat().st_size / (H * W)
        # which code each tile kept: the model's (learned) or a stored one (PNG, uniform, JPEG XL)
        tiles = ", ".join(f"{kind} {n}" for kind, n in coded.tile_kinds.items() if n)
        log.info("demo: %s (%dx%d) tau=%d -> %s, %.3f bpp, max error %d (tiles: %s)", DEMO_IMAGE.name, W, H, tau,
                 path, bpp, err, tiles)
        out[f"demo/bpp_tau{tau}"] = bpp
        out[f"demo/max_err_tau{tau}"] = err
    return out
