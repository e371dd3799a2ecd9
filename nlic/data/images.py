"""Finding and loading training/evaluation images."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from nlic.errors import ImageError
from nlic.io.images import read_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm"}
#: images shipped inside the package (crops of real photos, see assets/README.md)
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "assets" / "images"
DEMO_IMAGE = Path(__file__).resolve().parent.parent / "assets" / "demo.png"


def list_images(root: str | Path | None) -> list[Path]:
    """Image files under ``root`` (recursively, sorted); ``None`` = the built-in images."""
    folder = Path(root) if root is not None else BUILTIN_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files


def load_rgb(path: str | Path, data: bytes | None = None) -> np.ndarray | None:
    """8-bit RGB array (EXIF-upright, grey replicated, alpha dropped), or ``None`` with a warning
    naming the file if :func:`nlic.io.images.read_image` refuses it (corrupt, 16-bit, too large).
    ``data``: the file's bytes when already read (a tar shard member named ``path``)."""
    try:
        return read_image(path, data).rgb()
    except ImageError as err:
        log.warning("skipping %s", err)
        return None


def probe_image(path: Path, min_size: int = 0) -> bool:
    """Whether ``path`` opens as an image at least ``min_size`` pixels on each side, reading only
    its header (lazy mode lists a folder without decoding it); ``False`` comes with a warning
    naming the file.  A file whose data is corrupt passes and is skipped when first decoded."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for non-images
        log.warning("skipping %s: not a readable image (%s)", path, " ".join(str(err).split()) or type(err).__name__)
        return False
    if min(h, w) < min_size:
        log.warning("skipping %s: smaller than %d px", path, min_size)
        return False
    return True


def read_images(paths: Iterable[Path], min_size: int = 0, count: int | None = None) -> list[tuple[str, np.ndarray]]:
    """``(name, HxWx3 uint8)`` of the readable ``paths`` (the first ``count``); bad or too small
    files are skipped with a warning naming them."""
    out: list[tuple[str, np.ndarray]] = []
    for path in paths:
        if count is not None and len(out) >= count:
            break
        arr = load_rgb(path)
        if arr is None:
            continue
        if min(arr.shape[:2]) < min_size:
            log.warning("skipping %s: smaller than %d px", path, min_size)
            continue
        out.append((path.stem, arr))
    return out


def load_folder(root: str | Path | None, min_size: int = 0) -> list[tuple[str, np.ndarray]]:
    """All readable images of a folder as ``(name, HxWx3 uint8)``; bad files are skipped."""
    out = read_images(list_images(root), min_size)
    if not out:
        raise FileNotFoundError(f"no readable images in {root or BUILTIN_DIR}")
    return out
