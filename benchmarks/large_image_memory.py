"""Peak memory and time of coding one large real image (not a test).

The image is a real photo (scikit-image's astronaut, 512 x 512) mirror-tiled to 3000 x 2000
(``--full``: 6000 x 4000).  Encoding and decoding each run in a fresh child process so that each
phase's peak resident set size (``resource.getrusage(...).ru_maxrss``) is its own; the baseline
(interpreter + torch + model, no image) is measured the same way.  Default model: an untrained
tiny one (the config of tests/conftest.py), whose speed and memory are those of the coding
machinery rather than of a big network; pass ``--model`` for a trained one.

    OMP_NUM_THREADS=1 python benchmarks/large_image_memory.py            # 3000 x 2000
    OMP_NUM_THREADS=1 python benchmarks/large_image_memory.py --full     # 6000 x 4000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY_CONFIG = {
    "lossy": {"_target_": "nlic.codecs.mean_scale.MeanScaleHyperprior", "N": 16, "M": 24, "feature_channels": 8},
    "residual": {
        "_target_": "nlic.residual.network.ResidualNetwork", "feature_channels": 8, "mask": "3p",
        "mixtures": 2, "context_channels": 8, "hidden": 16, "layers": 2, "bias_correction": True,
    },
}  # fmt: skip


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def large_photo(width: int, height: int):
    """The astronaut photo mirror-tiled (no seams: every copy is flipped like its neighbour)."""
    import numpy as np
    from skimage import data

    a = data.astronaut()
    block = np.concatenate([np.concatenate([a, a[:, ::-1]], 1), np.concatenate([a[::-1], a[::-1, ::-1]], 1)], 0)
    reps = (-(-height // block.shape[0]), -(-width // block.shape[1]), 1)
    return np.ascontiguousarray(np.tile(block, reps)[:height, :width])


def phase(args: argparse.Namespace) -> dict:
    """One phase in this (child) process; returns its measurements."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from nlic.api import load_codec

    t0 = time.perf_counter()
    codec = load_codec(args.model, tile=args.tile).image_codec
    out = {"phase": args.phase, "model_load_s": time.perf_counter() - t0}
    work = Path(args.work)
    if args.phase == "baseline":
        large_photo(64, 64)
    elif args.phase == "encode":
        img = large_photo(args.width, args.height)
        t0 = time.perf_counter()
        blob = codec.compress(img, args.tau).data
        out["encode_s"] = time.perf_counter() - t0
        out["bytes"] = len(blob)
        out["bpp"] = 8 * len(blob) / (args.width * args.height)
        (work / "large.nlic").write_bytes(blob)
    else:
        blob = (work / "large.nlic").read_bytes()
        t0 = time.perf_counter()
        pixels = codec.decompress(blob).pixels
        out["decode_s"] = time.perf_counter() - t0
        img = large_photo(args.width, args.height)
        out["max_abs_error"] = int(np.abs(pixels.astype(np.int16) - img.astype(np.int16)).max())
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="6000 x 4000 instead of 3000 x 2000")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--tau", type=int, default=1)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--model", default=None, help="model file (default: an untrained tiny model)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--phase", choices=["baseline", "encode", "decode"], help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.width = args.width or (6000 if args.full else 3000)
    args.height = args.height or (4000 if args.full else 2000)
    if args.phase:
        print(json.dumps(phase(args)))
        return 0

    with tempfile.TemporaryDirectory() as work:
        if args.model is None:
            import torch

            from nlic.model_io import build_codec, save_model

            torch.manual_seed(0)
            args.model = str(Path(work) / "tiny.pt")
            save_model(build_codec(TINY_CONFIG), TINY_CONFIG, args.model)
        results = {"width": args.width, "height": args.height, "megapixels": args.width * args.height / 1e6,
                   "tau": args.tau, "tile": args.tile, "threads": args.threads, "model": args.model}  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        for name in ("baseline", "encode", "decode"):
            cmd = [sys.executable, __file__, "--phase", name, "--work", work, "--model", args.model,
                   "--width", str(args.width), "--height", str(args.height), "--tau", str(args.tau),
                   "--tile", str(args.tile), "--threads", str(args.threads)]  # fmt: skip
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if res.returncode != 0:
                print(res.stderr, file=sys.stderr)
                return 1
            results[name] = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"{name:8s} {results[name]}", flush=True)
    raw_mib = args.width * args.height * 3 / 2**20
    base = results["baseline"]["peak_rss_mib"]
    print(
        f"\n{args.width}x{args.height} ({results['megapixels']:.1f} MP, raw RGB {raw_mib:.0f} MiB), tau={args.tau}, "
        f"tile {args.tile}, {args.threads} thread(s)\n"
        f"  baseline (python + torch + model): peak RSS {base:.0f} MiB\n"
        f"  encode: {results['encode']['encode_s']:.1f} s, peak RSS {results['encode']['peak_rss_mib']:.0f} MiB "
        f"(+{results['encode']['peak_rss_mib'] - base:.0f} MiB), {results['encode']['bpp']:.2f} bpp\n"
        f"  decode: {results['decode']['decode_s']:.1f} s, peak RSS {results['decode']['peak_rss_mib']:.0f} MiB "
        f"(+{results['decode']['peak_rss_mib'] - base:.0f} MiB), max |error| {results['decode']['max_abs_error']}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
