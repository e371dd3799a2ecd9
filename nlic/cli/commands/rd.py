"""``nlic rd``: rate-distortion points of lossy codecs by real coding (flow vs autoencoder vs JPEG / JPEG-XL)."""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

from nlic.cli.commands import add_command, add_wandb_arguments
from nlic.errors import NlicError

#: settings per classic codec when --points does not name it
DEFAULT_POINTS = {"jpeg": [20.0, 40.0, 60.0, 80.0, 90.0, 95.0], "jpegxl": [0.5, 1.0, 2.0, 3.0, 5.0]}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "rd", "rate-distortion points of lossy codecs (real bytes, PSNR of the 8-bit output)",
        "nlic rd photos/ --model flow=outputs/lossy_rd/runs/<run>/lossy_model.pt --crop 256 --out rd/",
        description=(
            "Code every image with every codec at every setting through real bitstreams; write per-image "
            "and per-point tables (CSV + markdown) and a PSNR-vs-bpp plot to --out. A flow model gives a "
            "curve from one file (one point per quantization step); fixed-rate models give one point each."
        ),
    )
    p.add_argument("inputs", nargs="+", type=Path, help="image files and/or folders of images")
    p.add_argument("--codecs", default="jpeg,jpegxl",
                   help="classic codecs to include: jpeg, jpegxl (comma-separated; '' for none)")
    p.add_argument("--model", action="append", default=[], metavar="CODEC=FILE",
                   help="a trained lossy codec (lossy_model.pt); repeatable, several files per codec allowed")
    p.add_argument("--points", action="append", default=[], metavar="CODEC=V1,V2,...",
                   help="settings: jpeg=qualities, jpegxl=distances, flow=quantization steps "
                        f"(defaults jpeg={','.join(f'{v:g}' for v in DEFAULT_POINTS['jpeg'])}, "
                        f"jpegxl={','.join(f'{v:g}' for v in DEFAULT_POINTS['jpegxl'])}, flow: the model's own)")
    p.add_argument("--crop", type=int, default=None, help="centre-crop each image to at most CROP x CROP")
    p.add_argument("--max-images", type=int, default=None, help="use at most this many images")
    p.add_argument("--out", type=Path, default=None, help="output folder (default outputs/rd/<timestamp>)")
    add_wandb_arguments(p, group=True)
    p.add_argument("--quiet", action="store_true", help="do not print progress and the table")
    p.set_defaults(func=run)


def _images(inputs: list[Path], crop: int | None, max_images: int | None) -> list:
    from nlic.data.images import list_images
    from nlic.eval.evaluate import crop_images
    from nlic.io.images import read_image

    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            try:
                files.extend(list_images(item))
            except FileNotFoundError as err:
                raise NlicError(str(err)) from None
        else:
            files.append(item)
    if max_images is not None:
        if max_images < 1:
            raise NlicError("--max-images must be >= 1")
        files = files[:max_images]
    if crop is not None and crop < 16:
        raise NlicError("--crop must be >= 16")
    return crop_images([(f.stem, read_image(f).rgb()) for f in files], crop)


def _model_label(path: Path) -> str:
    """``runs/ms_l0.0067/lossy_model.pt`` -> ``ms_l0.0067``; any other file -> its stem."""
    return path.parent.name if path.name == "lossy_model.pt" and path.parent.name else path.stem


def run(args: argparse.Namespace) -> int:
    from nlic.studies import rd_curve
    from nlic.studies.codecs import CLASSIC_CODECS, make_codec

    classic = [n.strip() for n in args.codecs.split(",") if n.strip()]
    unknown = [n for n in classic if n not in CLASSIC_CODECS]
    if unknown:
        raise NlicError(f"--codecs: {', '.join(unknown)} is not a classic codec (learned codecs come with --model)")
    models: list[tuple[str, Path]] = []
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path:
            raise NlicError(f"--model expects CODEC=FILE, got {item!r}")
        models.append((name.strip(), Path(path)))
    if not classic and not models:
        raise NlicError("nothing to measure: give --codecs and/or --model")
    points = rd_curve.parse_points(args.points)
    stray = set(points) - set(classic) - {n for n, _ in models}
    if stray:
        raise NlicError(f"--points names codecs that are not measured: {', '.join(sorted(stray))}")
    images = _images(args.inputs, args.crop, args.max_images)

    codecs = []
    for name in classic:
        codecs += [make_codec(name, v) for v in points.get(name, DEFAULT_POINTS[name])]
    for name, path in models:
        for v in points.get(name, [None]):
            codecs.append(make_codec(name, v, path, label=_model_label(path)))

    out_dir = args.out or Path("outputs") / "rd" / _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")

    def progress(p: rd_curve.RDPoint) -> None:
        if not args.quiet:
            print(f"{p.codec:>12s} {p.setting:>16s}: {p.bpp:8.4f} bpp  {p.psnr:7.3f} dB", file=sys.stderr)

    rows, rd_points = rd_curve.measure(images, codecs, progress)
    paths = rd_curve.write_tables(rows, rd_points, out_dir)
    plot = rd_curve.plot_curves(rd_points, Path(out_dir) / "rd.png", title=f"{len(images)} images")
    if args.wandb:
        config = {"inputs": [str(i) for i in args.inputs], "images": len(images), "crop": args.crop,
                  "models": [f"{n}={p}" for n, p in models], "points": points, "classic": classic}
        rd_curve.log_to_wandb(rd_points, plot, out_dir, config, args.wandb_project, args.wandb_group)
    if not args.quiet:
        print(rd_curve.markdown_table(rd_points), end="")
        print(f"wrote {', '.join(str(p) for p in paths)}, {plot}")
    return 0
