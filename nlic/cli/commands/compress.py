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
    p = add_command(sub, "compress", "compress images to .nlic files (every sample within tau)",
                    "nlic compress photo.png photo.nlic --tau 2\n"
                    "  nlic compress photos/ 'scans/*.png' -o packed/ --tau 0 --jobs 2",
                    description="Compress one image (IN OUT) or many (files, folders, globs with -o DIR).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (PNG, JPEG, BMP, TIFF, ...), folders or globs; without -o: IN OUT")
    p.add_argument("-o", "--output-dir", type=Path, default=None, metavar="DIR",
                   help="write DIR/<name>.nlic for every input (keeps sub-folders of folder inputs)")
    p.add_argument("--tau", type=tau_arg, default=0, help="maximum absolute error per sample (0 = lossless)")
    p.add_argument("--model", type=Path, default=None,
                   help="model file or nlic-train checkpoint (default: the model shipped with nlic)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (each loads the model once)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the networks run (auto: a GPU when there is one); the file is the same")
    p.add_argument("--tile", type=int, default=512, help="tile size (multiple of 64); bounds memory")
    p.add_argument("--lossy-step", type=float, default=None, metavar="DELTA",
                   help="quantization step of the lossy layer, for models that have one (lossy=flow): "
                        "larger = fewer lossy bits, more residual bits; stored in the file (default: the model's own)")
    p.add_argument("--learned-only", action="store_true",
                   help="keep the learned code of every tile, even where the stored fallback is smaller (studies)")
    p.add_argument("--adapt", action="store_true",
                   help="re-fit the model's output layers to every tile and store the change where it pays "
                        "(encoding about 2.7x slower, decoding about 1.25x; at tau 0 it saved 0.8 %% of the default "
                        "model's learned code on its held-out photos)")
    p.add_argument("--colour-red", action="store_true",
                   help="code every colour tile's R with the colour heads, never the grey heads (formats 8, 9): "
                        "encoding and decoding about a fifth faster where they would have coded R, files 0.5-1.2 %% "
                        "larger")
    p.add_argument("--no-jxl-tiles", action="store_true",
                   help="never store the image or a tile as JPEG XL lossless, even where that is smaller (at tau 0 "
                        "the encoder also codes the whole image as JPEG XL: encoding about 1 s/MP of one core "
                        "faster, files up to 12 %% larger on the validation photos where JPEG XL wins)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.set_defaults(func=run)


def _load(model: Path | None, tile: int, learned_only: bool, device: str = "cpu", colour_red: bool = False,
          no_jxl_tiles: bool = False):
    from nlic.api import load_codec

    return load_codec(model, tile=tile, stored_fallback=not learned_only, device=device, grey_red=not colour_red,
                      jxl_tiles=not no_jxl_tiles)


def _compress_one(tau: int, lossy_step: float | None, force: bool, adapt: bool, codec, source: Path,
                  target: Path):
    from nlic.cli.batch import Outcome
    from nlic.io import atomic_write_bytes, check_not_same_file, read_image

    check_not_same_file(source, target)
    image = read_image(source)
    result = codec.compress(image.pixels, tau, alpha=image.alpha, lossy_step=lossy_step, adapt=adapt)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, result.data, force=force)
    return Outcome(str(source), str(target), True, in_bytes=source.stat().st_size, out_bytes=len(result.data),
                   pixels=result.width * result.height, max_error=result.max_error,
                   extra={"tau": tau, "coded": True, "mode": image.mode, "width": result.width,
                          "height": result.height, "encode_s": result.encode_s})


def run(args: argparse.Namespace) -> int:
    from nlic.errors import NlicError

    # cheap checks first: a bad argument is reported before torch and the model are loaded
    if args.tile <= 0 or args.tile % 64:
        raise NlicError(f"--tile must be a positive multiple of 64, got {args.tile}")
    if args.lossy_step is not None and not (math.isfinite(args.lossy_step) and args.lossy_step > 0):
        raise NlicError(f"--lossy-step must be a positive number, got {args.lossy_step}")
    if args.jobs < 1:
        raise NlicError(f"--jobs must be at least 1, got {args.jobs}")
    check_model_arg(args.model)
    if args.output_dir is None:
        return _run_single(args)
    return _run_batch(args)


def _run_single(args: argparse.Namespace) -> int:
    from nlic.errors import NlicError
    from nlic.io import check_not_same_file, check_output_path

    if len(args.inputs) != 2:
        raise NlicError("give one input and one output (nlic compress IN OUT), or several inputs with -o DIR")
    source, target = (Path(a) for a in args.inputs)
    check_not_same_file(source, target)
    check_output_path(target, force=args.force)
    from nlic.io import read_image

    read_image(source)  # a bad input is reported before torch and the model are loaded
    codec = _load(args.model, args.tile, args.learned_only, args.device, args.colour_red, args.no_jxl_tiles)
    out = _compress_one(args.tau, args.lossy_step, args.force, args.adapt, codec, source, target)
    e = out.extra
    print(f"{source} -> {target}: {e['width']}x{e['height']} {e['mode']}, tau={args.tau}, {out.out_bytes} bytes, "
          f"{8 * out.out_bytes / out.pixels:.3f} bpp, {e['encode_s']:.2f} s")
    return 0


def _run_batch(args: argparse.Namespace) -> int:
    import functools
    import time

    from nlic.cli.batch import IMAGE_SUFFIXES, expand_inputs, plan_outputs, report, run_batch

    pairs = plan_outputs(expand_inputs(args.inputs, IMAGE_SUFFIXES), args.output_dir, ".nlic", args.force)
    t0 = time.perf_counter()
    load = functools.partial(_load, args.model, args.tile, args.learned_only, args.device, args.colour_red,
                             args.no_jxl_tiles)
    code = functools.partial(_compress_one, args.tau, args.lossy_step, args.force, args.adapt)
    outcomes = run_batch(pairs, load, code, args.jobs, "compress")
    return report(outcomes, time.perf_counter() - t0, coded=True)
