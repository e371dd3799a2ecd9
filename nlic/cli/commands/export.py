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
    p.add_argument("--no-register", action="store_true",
                   help="do not copy the model into the model store (where decompress finds models by id)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import hashlib

    from nlic.io import atomic_output, check_not_same_file, check_output_path
    from nlic.model_io import load_model, save_model

    check_not_same_file(args.checkpoint, args.output)
    check_output_path(args.output, force=args.force)
    loaded = load_model(args.checkpoint)
    source = hashlib.sha256(args.checkpoint.read_bytes()).hexdigest()[:16]
    with atomic_output(args.output, force=args.force) as tmp:
        save_model(loaded.codec, loaded.config, tmp,
                   meta={"exported_from": args.checkpoint.name, "source_sha256": source}, half=args.half)
    mid = load_model(args.output).model_id
    size = args.output.stat().st_size
    print(f"{args.checkpoint} -> {args.output}: {size / 1e6:.2f} MB, model id {mid.hex()}")
    if not args.no_register:
        from nlic.model_store import register

        print(f"registered as {register(args.output, mid)} (nlic decompress finds it by id)")
    return 0
