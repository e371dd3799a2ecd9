"""``nlic compress IN OUT.nlic --tau T [--model CKPT] [--force]``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from nlic.cli.commands import add_command

#: same bound as :data:`nlic.coding.image.MAX_TAU` (not imported: that module pulls in torch)
MAX_TAU = 255


def tau_arg(text: str) -> int:
    """``--tau`` value: an integer in 0..255 (checked at parse time, before any heavy import)."""
    try:
        tau = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"tau must be an integer in 0..{MAX_TAU}, got {text!r}") from None
    if not 0 <= tau <= MAX_TAU:
        raise argparse.ArgumentTypeError(f"tau must be between 0 and {MAX_TAU}, got {tau}")
    return tau


def check_model_arg(model: Path | None) -> None:
    """Fail fast (before loading torch) when ``--model`` names no file."""
    from nlic.errors import ModelError

    if model is not None and not model.exists():
        raise ModelError(f"model file not found: {model}")
    if model is not None and model.is_dir():
        raise ModelError(f"model path is a directory, not a file: {model}")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "compress", "compress an image to a .nlic file (every sample within tau)",
                    "nlic compress photo.png photo.nlic --tau 2")
    p.add_argument("input", type=Path, help="8-bit image (PNG, JPEG, BMP, TIFF, ...)")
    p.add_argument("output", type=Path, help="output .nlic file")
    p.add_argument("--tau", type=tau_arg, default=0, help="maximum absolute error per sample (0 = lossless)")
    p.add_argument("--model", type=Path, default=None,
                   help="model file or nlic-train checkpoint (default: the model shipped with nlic)")
    p.add_argument("--tile", type=int, default=512, help="tile size (multiple of 64); bounds memory")
    p.add_argument("--lossy-step", type=float, default=None, metavar="DELTA",
                   help="quantization step of the lossy layer, for models that have one (lossy=flow): "
                        "larger = fewer lossy bits, more residual bits; stored in the file (default: the model's own)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nlic.errors import NlicError
    from nlic.io import atomic_write_bytes, check_not_same_file, check_output_path, read_image

    # cheap checks first: a bad argument is reported before torch and the model are loaded
    if args.tile <= 0 or args.tile % 64:
        raise NlicError(f"--tile must be a positive multiple of 64, got {args.tile}")
    if args.lossy_step is not None and not (math.isfinite(args.lossy_step) and args.lossy_step > 0):
        raise NlicError(f"--lossy-step must be a positive number, got {args.lossy_step}")
    check_not_same_file(args.input, args.output)
    check_output_path(args.output, force=args.force)
    check_model_arg(args.model)
    image = read_image(args.input)

    from nlic.api import load_codec
    from nlic.coding.image import check_tau

    check_tau(args.tau)
    codec = load_codec(args.model, tile=args.tile)
    result = codec.compress(image.pixels, args.tau, alpha=image.alpha, lossy_step=args.lossy_step)
    atomic_write_bytes(args.output, result.data, force=args.force)
    print(f"{args.input} -> {args.output}: {result.width}x{result.height} {image.mode}, tau={args.tau}, "
          f"{len(result.data)} bytes, {result.bpp:.3f} bpp, {result.encode_s:.2f} s")
    return 0
