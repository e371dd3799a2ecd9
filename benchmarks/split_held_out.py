"""Copy the default model's held-out photos (``val_photos`` in ``conf/experiment/default_model.yaml``,
never trained on) out of a training folder, so that ``nlic bench`` and ``coding_speed.py`` can
measure them, and optionally the rest into a training folder without them (a GPU stage's upload)::

    python benchmarks/split_held_out.py ../shared/data/train held_out/ [--rest train_without_held_out/]

The config's list is the one source: training excludes the same stems by ``data.val_files``.
Output folders must be new or empty: nothing is overwritten.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from omegaconf import OmegaConf

from nlic.project import config_dir

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def held_out_stems() -> list[str]:
    """The stems the default model's training holds out (its ``val_photos``)."""
    config = OmegaConf.load(Path(config_dir()) / "experiment" / "default_model.yaml")
    return [str(stem) for stem in config.val_photos]


def _empty_folder(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise SystemExit(f"split_held_out: {path} exists and is not an empty folder (nothing is overwritten)")
    path.mkdir(parents=True, exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="folder of training photos, e.g. ../shared/data/train")
    p.add_argument("held_out", type=Path, help="new folder for the held-out photos")
    p.add_argument("--rest", type=Path, default=None, help="new folder for every other photo")
    args = p.parse_args(argv)
    if not args.source.is_dir():
        print(f"split_held_out: no such folder: {args.source}", file=sys.stderr)
        return 2
    stems = set(held_out_stems())
    photos = sorted(f for f in args.source.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    missing = stems - {f.stem for f in photos}
    if missing:
        print(f"split_held_out: {args.source} lacks held-out photos: {', '.join(sorted(missing))}", file=sys.stderr)
        return 2
    for folder in (args.held_out, args.rest):
        if folder is not None:
            _empty_folder(folder)
    copied = {"held_out": 0, "rest": 0}
    for photo in photos:
        target = args.held_out if photo.stem in stems else args.rest
        if target is not None:
            shutil.copy2(photo, target / photo.name)
            copied["held_out" if target == args.held_out else "rest"] += 1
    print(f"{copied['held_out']} held-out photos -> {args.held_out}"
          + (f", {copied['rest']} others -> {args.rest}" if args.rest is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
