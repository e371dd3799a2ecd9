"""Finding and loading training/evaluation images."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

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
    """8-bit RGB array, or ``None`` (with a warning naming the file) if it cannot be read."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("RGB", "RGBA", "L", "P", "LA", "CMYK", "YCbCr", "1"):
                log.warning("skipping %s: unsupported mode %s", path, im.mode)
                return None
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        log.warning("skipping unreadable image %s (%s)", path, err)
        return None
    except Exception as err:  # Pillow reports some corrupt files as SyntaxError, struct.error, ...
        log.warning("skipping corrupt image %s (%s: %s)", path, type(err).__name__, err)
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
