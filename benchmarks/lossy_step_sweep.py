"""Near-lossless bpp per tau against the lossy layer's quantization step (models with lossy=flow).

A flow lossy layer takes its step Δ at encode time (``nlic compress --lossy-step``): a small Δ spends
bits on the lossy image, a large one on the residual.  (A model without a step gives one row, for
comparison.)  This codes every image at every (Δ, tau)
through real bytes, decodes it again, checks the bound and prints bpp per tau and Δ (and the best Δ
per tau).  Not a test: prints a table.

    python benchmarks/lossy_step_sweep.py MODEL.pt IMAGES_DIR --steps 0.03,0.08,0.16,0.3 --crop 256
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("images", type=Path, help="folder of images")
    p.add_argument("--steps", default="0.03,0.08,0.16,0.3", help="quantization steps to try")
    p.add_argument("--taus", default="0,1,2,3,4,5")
    p.add_argument("--crop", type=int, default=None, help="centre-crop images to at most CROP x CROP")
    args = p.parse_args(argv)

    from nlic.api import load_codec
    from nlic.data.images import load_folder
    from nlic.eval.evaluate import crop_images

    codec = load_codec(args.model)
    lossy = codec.image_codec.model.lossy
    images = crop_images(load_folder(args.images), args.crop)
    # a lossy codec without a step (mean_scale, ...) gives one row: the same table, for comparison
    steps = [float(s) for s in args.steps.split(",")] if hasattr(lossy, "delta") else [None]
    taus = [int(t) for t in args.taus.split(",")]
    table: dict[tuple[float | None, int], float] = {}
    t0 = time.perf_counter()
    for step in steps:
        for tau in taus:
            bits = pixels = 0
            for name, img in images:
                data = codec.compress(img, tau, lossy_step=step).data
                err = int(np.abs(codec.decompress(data).pixels.astype(np.int16) - img.astype(np.int16)).max())
                if err > tau:
                    raise SystemExit(f"bound violated: {name} step {step} tau {tau}: max error {err}")
                bits += 8 * len(data)
                pixels += img.shape[0] * img.shape[1]
            table[step, tau] = bits / pixels
    mp = sum(i.shape[0] * i.shape[1] for _, i in images) / 1e6
    print(f"{args.model} on {len(images)} images ({mp:.2f} MP), every decoded image within tau; "
          f"{time.perf_counter() - t0:.0f} s")
    print("| step | " + " | ".join(f"tau={t}" for t in taus) + " |")
    print("| ---: | " + " | ".join("---:" for _ in taus) + " |")
    for step in steps:
        label = "model" if step is None else f"{step:g}"
        print(f"| {label} | " + " | ".join(f"{table[step, t]:.3f}" for t in taus) + " |")
    if len(steps) > 1:
        best = [min(steps, key=lambda s, t=t: table[s, t]) for t in taus]
        print("| best | " + " | ".join(f"{table[b, t]:.3f} (Δ={b:g})" for b, t in zip(best, taus)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
