"""Reading input images into 8-bit arrays and writing decoded images as lossless files.

Every failure a user can cause (missing, unreadable, corrupt, unsupported or oversized file)
is reported as a one-line :class:`~nlic.errors.ImageError` naming the file.
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from nlic.errors import ImageError, NlicError
from nlic.io.atomic import PathLike, atomic_write_bytes, check_output_path

__all__ = [
    "MAX_PIXELS",
    "OUTPUT_FORMATS",
    "DecodedImage",
    "encode_image",
    "output_format",
    "read_image",
    "write_image",
]

#: Largest accepted image, in pixels (width * height).  Big enough for real photos (100 MP),
#: small enough to stop decompression bombs.
MAX_PIXELS = 100_000_000
# Pillow's own guard: warns above the limit and raises above twice the limit.  We turn both
# into ImageError and additionally enforce MAX_PIXELS exactly ourselves.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

#: Formats read_image will open.  Deliberately a closed list: Pillow can also open formats such
#: as EPS that run external programs, which an image codec has no reason to touch.  JPEG also
#: covers MPO (the multi-picture JPEG many cameras write).  JPEG 2000 and AVIF are left out
#: because Pillow silently reduces their high-bit-depth variants to 8 bits.
_INPUT_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "TIFF", "GIF", "WEBP", "PPM", "TGA", "QOI", "SGI", "PCX")


@functools.cache
def _open_formats() -> tuple[str, ...]:
    """The input formats this Pillow build can actually open (plugins vary between builds)."""
    Image.init()
    return tuple(f for f in _INPUT_FORMATS if f in Image.OPEN)


#: Lossless output formats by file extension.
OUTPUT_FORMATS = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class DecodedImage:
    """An 8-bit image: ``pixels`` is uint8 HxWxC (C = 1 or 3), ``alpha`` uint8 HxW or None.

    ``alpha`` is None when the image has no alpha channel or it is fully opaque.  ``mode`` is
    the Pillow mode of the original file ("RGB", "L", "RGBA", "LA", "P", "1", "CMYK", ...).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    mode: str = ""

    def __post_init__(self) -> None:
        px = np.asarray(self.pixels)
        if px.ndim == 2:
            px = px[:, :, None]
        if px.dtype != np.uint8 or px.ndim != 3 or px.shape[2] not in (1, 3):
            raise ValueError(f"pixels must be uint8 HxWx1 or HxWx3, got {px.dtype} {px.shape}")
        if px.shape[0] < 1 or px.shape[1] < 1:
            raise ValueError(f"image must be at least 1x1, got {px.shape[1]}x{px.shape[0]}")
        self.pixels = px
        if self.alpha is not None:
            a = np.asarray(self.alpha)
            if a.dtype != np.uint8 or a.shape != px.shape[:2]:
                raise ValueError(f"alpha must be uint8 {px.shape[:2]}, got {a.dtype} {a.shape}")
            self.alpha = a
        if not self.mode:
            self.mode = {1: "L", 3: "RGB"}[px.shape[2]] + ("A" if self.alpha is not None else "")

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        """Colour channels (1 = grayscale, 3 = RGB), not counting alpha."""
        return int(self.pixels.shape[2])

    def rgb(self) -> np.ndarray:
        """The colour samples as ``H x W x 3`` uint8 (grey replicated, alpha dropped)."""
        px = self.pixels if self.channels == 3 else np.repeat(self.pixels, 3, axis=2)
        return np.ascontiguousarray(px)


# --------------------------------------------------------------------------------------- reading


def _oneline(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _check_path(path: Path) -> None:
    """Clear messages for the common non-image cases, before Pillow sees the file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(f"image file not found: {path}") from None
    except OSError as exc:
        raise ImageError(f"cannot read image {path}: {exc.strerror or _oneline(exc)}") from None
    if path.is_dir():
        raise ImageError(f"is a directory, not an image file: {path}")
    if not path.is_file():
        raise ImageError(f"not a regular file: {path}")
    if st.st_size == 0:
        raise ImageError(f"empty file, not an image: {path}")


def _png_bit_depth(path: Path, head: bytes | None = None) -> int | None:
    """Bit depth from the IHDR chunk of a PNG file (None if not a PNG); ``head``: its first bytes."""
    if head is None:
        with open(path, "rb") as f:
            head = f.read(33)
    if not head.startswith(_PNG_SIGNATURE):
        return None
    if len(head) < 25 or head[12:16] != b"IHDR":
        raise ImageError(f"corrupt PNG file (no IHDR header): {path}")
    return head[24]


def _high_bit_depth(im: Image.Image) -> str | None:
    """A description ("16-bit", ...) if the opened file stores more than 8 bits per sample, else None.

    Pillow silently truncates some of these (16-bit RGB PNG/TIFF/PPM become 8-bit "RGB"),
    so the mode alone is not enough; look at the format headers and raw decoder modes too.
    """
    if im.mode.startswith("I;16"):
        return "16-bit"
    for tile in im.tile:
        codec, args = tile[0], tile[3]
        if codec == "ppm" and isinstance(args, tuple) and len(args) > 1 and args[1] > 255:
            return "16-bit"  # PPM/PGM with maxval > 255
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str):
            for bits in ("16", "32"):
                if f";{bits}" in rawmode:
                    return f"{bits}-bit"
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258)  # BitsPerSample
        if isinstance(bits, int):
            bits = (bits,)
        if bits and max(bits) > 8:
            return f"{max(bits)}-bit"
    if im.mode == "I":
        return "32-bit integer"
    if im.mode == "F":
        return "floating-point"
    return None


def _exif_upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a malformed EXIF block is ignored (image kept as stored)."""
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation not in range(2, 9):
            return im  # upright already: no copy of a possibly huge image
        out = ImageOps.exif_transpose(im)
    except Exception:  # broken metadata must not make a readable image unreadable
        return im
    return out if out is not None else im


def _to_arrays(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert a loaded 8-bit Pillow image to (HxWxC uint8 pixels, HxW uint8 alpha or None)."""
    mode = im.mode
    has_transparency = "transparency" in im.info
    if mode == "1":
        im = im.convert("L")
    elif mode == "P":
        rgba = has_transparency or (im.palette is not None and im.palette.mode == "RGBA")
        im = im.convert("RGBA" if rgba else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("L", "RGB") and has_transparency:  # tRNS colour key
        im = im.convert(mode + "A")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):  # CMYK, YCbCr, LAB, HSV, RGBX, ...
        im = im.convert("RGB")
    arr = np.array(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if im.mode in ("LA", "RGBA"):
        pixels, alpha = np.ascontiguousarray(arr[:, :, :-1]), np.ascontiguousarray(arr[:, :, -1])
        if alpha.min() == 255:
            alpha = None
        return pixels, alpha
    return arr, None


def read_image(path: PathLike, data: bytes | None = None) -> DecodedImage:
    """Read an 8-bit image file as an upright (EXIF-rotated) :class:`DecodedImage`.

    Palette images become RGB(A), bilevel becomes L, CMYK/YCbCr become RGB; a fully opaque
    alpha channel is dropped.  Raises :class:`ImageError` for missing, unreadable, corrupt,
    non-image, 16-bit or larger-than-:data:`MAX_PIXELS` files.  ``data``: the file's bytes when
    they are already in memory (a member of a tar shard); ``path`` then only names it in errors.
    """
    p = Path(path)
    if data is None:
        _check_path(p)
    elif not data:
        raise ImageError(f"empty file, not an image: {p}")
    try:
        bits = _png_bit_depth(p, None if data is None else data[:33])
        if bits is not None and bits > 8:
            raise ImageError(f"{bits}-bit images are not supported (only 8-bit): {p}")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p if data is None else io.BytesIO(data), formats=_open_formats()) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ImageError(
                        f"image too large: {w}x{h} = {w * h / 1e6:.0f} megapixels "
                        f"(limit {MAX_PIXELS / 1e6:.0f}): {p}"
                    )
                if w < 1 or h < 1:
                    raise ImageError(f"image has no pixels ({w}x{h}): {p}")
                depth = _high_bit_depth(im)
                if depth is not None:
                    raise ImageError(f"{depth} images are not supported (only 8-bit): {p}")
                mode = im.mode
                im.load()
                upright = _exif_upright(im)
                pixels, alpha = _to_arrays(upright)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image too large (possible decompression bomb): {p} ({_oneline(exc)})") from None
    except UnidentifiedImageError:
        raise ImageError(f"not a supported image file: {p}") from None
    except PermissionError:
        raise ImageError(f"permission denied reading image: {p}") from None
    except MemoryError:
        raise ImageError(f"not enough memory to decode image: {p}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError,
            TypeError, ZeroDivisionError) as exc:  # fmt: skip
        # Pillow reports corrupt/truncated data with a variety of exception types.
        raise ImageError(f"corrupt or truncated image file: {p} ({_oneline(exc)})") from None
    return DecodedImage(pixels=pixels, alpha=alpha, mode=mode)


# --------------------------------------------------------------------------------------- writing


def _to_pil(image: DecodedImage) -> Image.Image:
    """L, LA, RGB or RGBA Pillow image (Pillow infers the mode from the array's shape)."""
    arr = image.pixels if image.alpha is None else np.dstack([image.pixels, image.alpha])
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    im = Image.fromarray(np.ascontiguousarray(arr))
    assert im.mode in ("L", "LA", "RGB", "RGBA"), im.mode
    return im


def output_format(path: PathLike) -> str:
    """The Pillow format used for an output path, by extension; NlicError if not lossless/known."""
    ext = Path(path).suffix.lower()
    fmt = OUTPUT_FORMATS.get(ext)
    if fmt is None:
        known = ", ".join(sorted(OUTPUT_FORMATS))
        raise NlicError(f"unsupported output image type {ext or '(no extension)'!r} for {path}: use {known}")
    return fmt


def encode_image(image: DecodedImage, fmt: str = "PNG") -> bytes:
    """Encode ``image`` losslessly in Pillow format ``fmt`` (PNG, TIFF or BMP) and return the bytes."""
    if fmt == "BMP" and image.alpha is not None:
        raise NlicError("BMP cannot store an alpha channel; write a .png instead")
    buf = io.BytesIO()
    _to_pil(image).save(buf, format=fmt)
    return buf.getvalue()


def write_image(path: PathLike, image: DecodedImage, force: bool = False) -> None:
    """Write ``image`` losslessly to ``path`` (.png; also .tif/.tiff, .bmp without alpha), atomically.

    Grayscale is stored as L (LA with alpha), colour as RGB (RGBA with alpha).  Raises
    :class:`NlicError` if ``path`` exists and ``force`` is false or its extension is unsupported.
    """
    fmt = output_format(path)
    check_output_path(path, force)  # fail before encoding
    atomic_write_bytes(path, encode_image(image, fmt), force=force)
