"""Finding and loading training/evaluation images."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

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


def load_rgb(path: Path) -> np.ndarray | None:
    """8-bit RGB array (EXIF-upright, grey replicated, alpha dropped), or ``None`` with a warning
    naming the file if :func:`nlic.io.images.read_image` refuses it (corrupt, 16-bit, too large)."""
    try:
        return read_image(path).rgb()
    except ImageError as err:
        log.warning("skipping %s", err)
        return None


def load_folder(root: str | Path | None, min_size: int = 0) -> list[tuple[str, np.ndarray]]:
    """All readable images of a folder as ``(name, HxWx3 uint8)``; bad files are skipped."""
    out = []
    for path in list_images(root):
        arr = load_rgb(path)
        if arr is None:
            continue
        if min(arr.shape[:2]) < min_size:
            log.warning("skipping %s: smaller than %d px", path, min_size)
            continue
        out.append((path.stem, arr))
    if not out:
        raise FileNotFoundError(f"no readable images in {root or BUILTIN_DIR}")
    return out
