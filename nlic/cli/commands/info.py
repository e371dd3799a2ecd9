"""``nlic info FILE.nlic``: header fields and the size of each part (no model needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from nlic.cli.commands import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "info", "print shape, tau, model id and part sizes of a .nlic file",
                    "nlic info photo.nlic --json")
    p.add_argument("input", type=Path, help=".nlic file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from nlic.bitstream.container import Container
    from nlic.errors import NlicError

    if not args.input.is_file():
        raise NlicError(f"input file not found: {args.input}")
    try:
        data = args.input.read_bytes()
    except OSError as err:
        raise NlicError(f"cannot read {args.input}: {err.strerror or err}") from None
    c = Container.from_bytes(data)
    parts = c.part_sizes(len(data))
    info = {
        "file": str(args.input), "format_version": c.version, "width": c.width, "height": c.height,
        "mode": c.mode, "tau": c.tau, "model_id": c.model_id.hex(), "tile": c.tile, "tiles": len(c.tiles),
        "tile_kinds": c.tile_kinds(), "bytes": parts, "bpp": 8 * parts["total"] / (c.width * c.height),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    # the kinds the file's tiles took (--json lists every kind, with its zeros)
    rows = [(key, info[key]) for key in ("file", "format_version", "width", "height", "mode", "tau", "model_id",
                                          "tile", "tiles")]
    rows += [("tiles." + key, val) for key, val in info["tile_kinds"].items() if val]
    rows += [("bytes." + key, val) for key, val in parts.items()]
    rows.append(("bpp", f"{info['bpp']:.4f}"))
    width = max(len(key) for key, _ in rows)
    for key, val in rows:
        print(f"{key:{width}s} {val}")
    return 0
