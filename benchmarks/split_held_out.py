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

from nlic.data.images import list_images
from nlic.project import config_dir


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
    stems = set(held_out_stems())
    try:
        photos = list_images(args.source)  # the files training reads from data.root (recursively)
    except FileNotFoundError as err:  # no such folder, or no images in it
        print(f"split_held_out: {err}", file=sys.stderr)
        return 2
    missing = stems - {f.stem for f in photos}
    if missing:
        print(f"split_held_out: {args.source} lacks held-out photos: {', '.join(sorted(missing))}", file=sys.stderr)
        return 2
    for folder in (args.held_out, args.rest):
        if folder is not None:
            _empty_folder(folder)
    for photo in photos:
        target = args.held_out if photo.stem in stems else args.rest
        if target is not None:  # under the same sub-folder as in the source: no two files meet
            copy = target / photo.relative_to(args.source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(photo, copy)
    held = sum(f.stem in stems for f in photos)
    print(f"{held} held-out photos -> {args.held_out}"
          + (f", {len(photos) - held} others -> {args.rest}" if args.rest is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
