"""``nlic decompress IN.nlic OUT.png [--model CKPT] [--force]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from nlic.cli.commands import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "decompress", "decode a .nlic file to PNG", "nlic decompress photo.nlic restored.png")
    p.add_argument("input", type=Path, help=".nlic file")
    p.add_argument("output", type=Path, help="output image (.png, .tif or .bmp)")
    p.add_argument("--model", type=Path, default=None,
                   help="the model that encoded the file (default: the shipped model)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nlic.bitstream.container import Container
    from nlic.cli.commands.compress import check_model_arg
    from nlic.errors import NlicError
    from nlic.io import DecodedImage, check_not_same_file, check_output_path, output_format, write_image

    output_format(args.output)
    check_not_same_file(args.input, args.output)
    check_output_path(args.output, force=args.force)
    if not args.input.is_file():
        raise NlicError(f"input file not found: {args.input}")
    check_model_arg(args.model)
    try:
        data = args.input.read_bytes()
    except OSError as err:
        raise NlicError(f"cannot read {args.input}: {err.strerror or err}") from None
    Container.from_bytes(data)  # validate the file before loading torch and a model

    from nlic.api import load_codec

    codec = load_codec(args.model)
    out = codec.decompress(data)
    write_image(args.output, DecodedImage(out.pixels, out.alpha, out.mode), force=args.force)
    h, w = out.pixels.shape[:2]
    print(f"{args.input} -> {args.output}: {w}x{h} {out.mode}, {out.decode_s:.2f} s")
    return 0
