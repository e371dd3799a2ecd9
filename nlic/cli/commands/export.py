"""``nlic export CKPT OUT.pt [--half]``: a Lightning checkpoint -> a small self-contained model file."""

from __future__ import annotations

import argparse
from pathlib import Path

from nlic.cli.commands import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "export", "export an nlic-train checkpoint as a model file for --model",
                    "nlic export outputs/train/runs/<run>/checkpoints/last.ckpt model.pt --half")
    p.add_argument("checkpoint", type=Path, help="nlic-train checkpoint (.ckpt) or model file")
    p.add_argument("output", type=Path, help="output model file (.pt)")
    p.add_argument("--half", action="store_true", help="store weights in float16 (half the size)")
    p.add_argument("--gray-heads", type=Path, metavar="GRAY",
                   help="checkpoint or model of the same architecture trained on grey crops "
                        "(data.gray_fraction=1): its heads become the model's grey heads; a model "
                        "with grey heads of its own (e.g. the shipped default) gives those; smaller "
                        "heads are grown to the model's sizes, computing what they computed")
    p.add_argument("--no-register", action="store_true",
                   help="do not copy the model into the model store (where decompress finds models by id)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import hashlib

    from nlic.io import atomic_output, check_not_same_file, check_output_path
    from nlic.model_io import NO_GREY_HEADS, load_model, save_model, with_gray_heads

    check_not_same_file(args.checkpoint, args.output)
    check_output_path(args.output, force=args.force)
    loaded = load_model(args.checkpoint)
    codec, config = loaded.codec, loaded.config
    meta = {"exported_from": args.checkpoint.name,
            "source_sha256": hashlib.sha256(args.checkpoint.read_bytes()).hexdigest()[:16]}
    if args.gray_heads is not None:
        check_not_same_file(args.gray_heads, args.output)
        codec, config = with_gray_heads(loaded, load_model(args.gray_heads))
        meta.update(gray_heads_from=args.gray_heads.name,
                    gray_source_sha256=hashlib.sha256(args.gray_heads.read_bytes()).hexdigest()[:16])
    with atomic_output(args.output, force=args.force) as tmp:
        save_model(codec, config, tmp, meta=meta, half=args.half)
    mid = load_model(args.output).model_id
    size = args.output.stat().st_size
    print(f"{args.checkpoint} -> {args.output}: {size / 1e6:.2f} MB, model id {mid.hex()}")
    if not codec.residual.has_gray_heads:  # (a colour-only run's checkpoint: an easy one to ship by mistake)
        print(f"note: this model {NO_GREY_HEADS}")
    if not args.no_register:
        from nlic.model_store import register

        print(f"registered as {register(args.output, mid)} (nlic decompress finds it by id)")
    return 0
