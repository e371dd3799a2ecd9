"""``nlic pack-shards FOLDER OUT_DIR [--shard-size-mb N] [--force]``: a folder of images -> tar shards
for ``nlic-train data=shards data.root=OUT_DIR`` (a few large files instead of many small ones)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from nlic.cli.commands import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "pack-shards", "pack a folder of training images into WebDataset tar shards (data=shards)",
        "nlic pack-shards /data/train /data/train_shards --shard-size-mb 256",
        description="Copy every image of FOLDER (recursively; files byte for byte, nothing re-encoded) into "
                    "OUT_DIR/shard-NNNNNN.tar of about --shard-size-mb each. Unreadable files are skipped with "
                    "a warning. Train on them with: nlic-train data=shards data.root=OUT_DIR",
    )
    p.add_argument("folder", type=Path, help="folder of images")
    p.add_argument("out_dir", type=Path, help="output folder for the shards")
    p.add_argument("--shard-size-mb", type=float, default=256.0,
                   help="size of a shard in MB; use at least ranks x workers shards")
    p.add_argument("--force", action="store_true", help="replace shards already in OUT_DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nlic.data.shards import pack_folder

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("nlic pack-shards: warning: %(message)s"))
    logger = logging.getLogger("nlic.data")
    logger.addHandler(handler)
    try:
        summary = pack_folder(args.folder, args.out_dir, args.shard_size_mb, force=args.force)
    finally:
        logger.removeHandler(handler)
    skipped = f", skipped {len(summary['skipped'])} unreadable" if summary["skipped"] else ""
    print(f"{args.folder} -> {args.out_dir}: {summary['images']} images ({summary['bytes'] / 1e6:.1f} MB) "
          f"in {summary['shards']} shard{'s' if summary['shards'] != 1 else ''}{skipped}")
    return 0
