"""``nlic reencode``: generation-loss study (decode -> re-encode N times with the same setting)."""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

from nlic.cli.commands import add_command, add_wandb_arguments
from nlic.errors import NlicError

DEFAULT_CODECS = "flow,mean_scale,jpeg,jpegxl"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "reencode", "re-encoding study: quality over N decode/re-encode generations",
        "nlic reencode photo.png --codecs jpeg,flow --flow-model lossy_model.pt --generations 10",
        description=(
            "Decode and re-encode IMAGE for N generations with the same setting per codec; write a "
            "per-generation table (CSV + markdown: PSNR to the original, bpp) and a plot to --out."
        ),
    )
    p.add_argument("image", type=Path, help="input image (any Pillow-readable file, coded as 8-bit RGB)")
    p.add_argument("--generations", type=int, default=10, help="number of generations")
    p.add_argument("--codecs", default=DEFAULT_CODECS,
                   help="comma-separated codecs: jpeg, jpegxl, or a conf/lossy name")
    p.add_argument("--flow-model", type=Path, default=None,
                   help="trained flow codec (lossy_model.pt of nlic-train experiment=lossy_rd lossy=flow)")
    p.add_argument("--mean-scale-model", type=Path, default=None, help="trained mean-scale codec (lossy_model.pt)")
    p.add_argument("--model", action="append", default=[], metavar="CODEC=CKPT",
                   help="trained model (lossy_model.pt) for any learned codec (repeatable)")
    p.add_argument("--quality", action="append", default=[], metavar="CODEC=VALUE[,...]",
                   help="setting per codec: jpeg=quality (1..100, default 90), jpegxl=distance "
                        "(default 1.0), flow=delta (quantization step, default: the model's)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default outputs/reencode/<image>-<timestamp>)")
    p.add_argument("--allow-untrained", action="store_true",
                   help="use freshly initialised learned codecs when no checkpoint is given (smoke tests)")
    p.add_argument("--feature-channels", type=int, default=32,
                   help="feature channels of untrained learned codecs")
    p.add_argument("--seed", type=int, default=0, help="seed for untrained codecs")
    add_wandb_arguments(p, group=True)
    p.add_argument("--quiet", action="store_true", help="do not print progress and the table")
    p.add_argument("--sweep", type=Path, default=None,
                   help="versioned sweep file: one study per entry of its 'settings' (sweeps/studies/reencode.yaml)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "sweep", None) is None:
        return _run_one(args)
    return _run_sweep(args)


def _run_sweep(args: argparse.Namespace) -> int:
    """One study per entry of ``settings`` in a versioned sweep file (see sweeps/studies/reencode.yaml)."""
    import copy

    from omegaconf import OmegaConf

    if not args.sweep.is_file():
        raise NlicError(f"sweep file not found: {args.sweep}")
    spec = OmegaConf.to_container(OmegaConf.load(args.sweep), resolve=True)
    settings = spec.get("settings") or [""]
    base = args.out or Path("outputs") / "reencode" / str(spec.get("sweep_name", args.sweep.stem))
    for i, setting in enumerate(settings):
        job = copy.copy(args)
        job.generations = int(spec.get("generations", args.generations))
        job.codecs = ",".join(spec.get("codecs", args.codecs.split(",")))
        job.model = list(args.model) + [f"{k}={v}" for k, v in (spec.get("models") or {}).items() if v]
        job.quality = [",".join(f"{k}={v}" for k, v in setting.items())] if setting else []
        job.out = Path(base) / f"{i}"
        job.wandb_group = job.wandb_group or spec.get("sweep_name")
        _run_one(job)
    return 0


def _run_one(args: argparse.Namespace) -> int:
    import torch

    from nlic.io.images import read_image
    from nlic.studies import reencode as study
    from nlic.studies.codecs import make_codecs, parse_qualities

    names = [n.strip() for n in args.codecs.split(",") if n.strip()]
    if not names:
        raise NlicError("--codecs is empty")
    if len(set(names)) != len(names):
        raise NlicError("--codecs names a codec twice")
    if args.generations < 1:
        raise NlicError("--generations must be >= 1")
    checkpoints: dict[str, Path | None] = {"flow": args.flow_model, "mean_scale": args.mean_scale_model}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise NlicError(f"--model expects CODEC=CKPT, got {item!r}")
        checkpoints[name.strip()] = Path(path)
    qualities = parse_qualities(args.quality)
    image = read_image(args.image).rgb()

    torch.manual_seed(args.seed)
    codecs = make_codecs(names, qualities, checkpoints, args.allow_untrained, args.feature_channels)

    out_dir = args.out
    if out_dir is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        out_dir = Path("outputs") / "reencode" / f"{args.image.stem}-{stamp}"

    def progress(r: study.GenerationResult) -> None:
        if not args.quiet:
            print(f"{r.codec:>10s} {r.setting:>14s} gen {r.generation:3d}: "
                  f"PSNR {r.psnr:7.3f} dB  {r.bpp:8.4f} bpp", file=sys.stderr)

    results = study.run_study(image, codecs, args.generations, progress)
    csv_path, md_path = study.write_tables(results, out_dir)
    plot_path = study.plot_results(
        results, Path(out_dir) / "reencode_psnr.png",
        title=f"{args.image.name}: {args.generations} generations",
    )
    if args.wandb:
        config = {
            "image": str(args.image), "generations": args.generations, "codecs": names,
            "settings": {c.name: c.setting for c in codecs},
            "checkpoints": {k: str(v) for k, v in checkpoints.items() if v is not None and k in names},
            "untrained": args.allow_untrained,
        }
        study.log_to_wandb(results, plot_path, out_dir, config, args.wandb_project, args.wandb_group)
    if not args.quiet:
        print(study.markdown_table(results), end="")
        print(f"wrote {csv_path}, {md_path}, {plot_path}")
    return 0
