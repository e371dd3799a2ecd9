"""Image reading/writing and atomic output files, on real (scikit-image bundled) photographs."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from nlic.errors import ImageError, NlicError
from nlic.io import images as images_mod
from nlic.io.atomic import atomic_output, atomic_write_bytes, check_not_same_file
from nlic.io.images import MAX_PIXELS, DecodedImage, read_image, write_image

# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """A non-square RGB crop (face region) of the astronaut photo."""
    return np.ascontiguousarray(skdata.astronaut()[40:88, 160:224])  # 48 x 64


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return np.ascontiguousarray(skdata.chelsea()[100:140, 150:210])  # 40 x 60


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return np.ascontiguousarray(skdata.camera()[100:140, 200:256])  # 40 x 56, grayscale


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    return np.ascontiguousarray(skdata.coffee()[150:182, 250:300])  # 32 x 50


def _save(path: Path, arr: np.ndarray, **kwargs) -> Path:
    Image.fromarray(arr).save(path, **kwargs)
    return path


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


# EXIF orientation -> the array transform that makes the stored image upright.
_UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def _assert_error_names_file(exc: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(exc.value)
    assert str(path) in msg
    assert "\n" not in msg
    assert "Traceback" not in msg
    return msg


# --------------------------------------------------------------------------------- reading: kinds


def test_rgb_png_exact(tmp_path, astronaut):
    img = read_image(_save(tmp_path / "a.png", astronaut))
    assert img.mode == "RGB" and img.alpha is None
    assert img.pixels.dtype == np.uint8 and img.pixels.shape == (48, 64, 3)
    np.testing.assert_array_equal(img.pixels, astronaut)
    assert (img.height, img.width, img.channels) == (48, 64, 3)


def test_read_accepts_str_path(tmp_path, chelsea):
    img = read_image(str(_save(tmp_path / "c.png", chelsea)))
    np.testing.assert_array_equal(img.pixels, chelsea)


def test_grayscale_png(tmp_path, camera):
    img = read_image(_save(tmp_path / "g.png", camera))
    assert img.mode == "L" and img.alpha is None
    assert img.pixels.shape == (40, 56, 1)
    np.testing.assert_array_equal(img.pixels[:, :, 0], camera)


def test_rgba_png_with_real_alpha(tmp_path, coffee):
    h, w = coffee.shape[:2]
    alpha = np.broadcast_to(np.linspace(0, 255, w).astype(np.uint8), (h, w)).copy()
    img = read_image(_save(tmp_path / "rgba.png", np.dstack([coffee, alpha])))
    assert img.mode == "RGBA"
    np.testing.assert_array_equal(img.pixels, coffee)
    assert img.alpha is not None
    np.testing.assert_array_equal(img.alpha, alpha)


def test_opaque_rgba_drops_alpha(tmp_path, coffee):
    opaque = np.dstack([coffee, np.full(coffee.shape[:2], 255, np.uint8)])
    img = read_image(_save(tmp_path / "opaque.png", opaque))
    assert img.mode == "RGBA"
    assert img.alpha is None
    np.testing.assert_array_equal(img.pixels, coffee)


def test_la_png(tmp_path, camera):
    alpha = (camera // 2 + 1).astype(np.uint8)  # never fully opaque
    img = read_image(_save(tmp_path / "la.png", np.dstack([camera, alpha])))
    assert img.mode == "LA" and img.pixels.shape == (*camera.shape, 1)
    np.testing.assert_array_equal(img.pixels[:, :, 0], camera)
    np.testing.assert_array_equal(img.alpha, alpha)


def test_palette_png(tmp_path, chelsea):
    pal = Image.fromarray(chelsea).quantize(colors=32)
    path = tmp_path / "p.png"
    pal.save(path)
    assert Image.open(path).mode == "P"
    img = read_image(path)
    assert img.mode == "P" and img.alpha is None and img.pixels.shape == (*chelsea.shape[:2], 3)
    np.testing.assert_array_equal(img.pixels, np.asarray(pal.convert("RGB")))
    assert np.abs(img.pixels.astype(int) - chelsea).mean() < 20  # still looks like the cat


def test_palette_png_with_transparency(tmp_path, chelsea):
    pal = Image.fromarray(chelsea).quantize(colors=16)
    idx = np.asarray(pal)
    transparent_index = int(idx[0, 0])
    path = tmp_path / "pt.png"
    pal.save(path, transparency=transparent_index)
    img = read_image(path)
    assert img.mode == "P"
    assert img.pixels.shape == (*chelsea.shape[:2], 3)
    assert img.alpha is not None
    np.testing.assert_array_equal(img.alpha == 0, idx == transparent_index)
    np.testing.assert_array_equal(img.alpha[idx != transparent_index], 255)


def test_grayscale_png_with_colour_key(tmp_path, camera):
    key = int(camera[0, 0])
    img = read_image(_save(tmp_path / "gk.png", camera, transparency=key))
    assert img.pixels.shape == (*camera.shape, 1)
    np.testing.assert_array_equal(img.alpha == 0, camera == key)


def test_rgb_png_with_colour_key_and_gif(tmp_path, chelsea):
    key = tuple(int(v) for v in chelsea[0, 0])
    img = read_image(_save(tmp_path / "ck.png", chelsea, transparency=key))
    np.testing.assert_array_equal(img.alpha == 0, (chelsea == chelsea[0, 0]).all(axis=-1))
    pal = Image.fromarray(chelsea).quantize(colors=8)
    pal.save(tmp_path / "c.gif")
    gif = read_image(tmp_path / "c.gif")
    np.testing.assert_array_equal(gif.pixels, np.asarray(pal.convert("RGB")))


def test_bilevel_becomes_l(tmp_path, camera):
    path = tmp_path / "bw.png"
    Image.fromarray(camera).convert("1").save(path)
    img = read_image(path)
    assert img.mode == "1" and img.pixels.shape == (*camera.shape, 1)
    assert set(np.unique(img.pixels)) <= {0, 255}
    assert len(np.unique(img.pixels)) == 2


def test_one_by_one(tmp_path):
    img = read_image(_save(tmp_path / "1.png", np.array([[[12, 34, 56]]], np.uint8)))
    assert img.pixels.shape == (1, 1, 3)
    assert img.pixels.tolist() == [[[12, 34, 56]]]


def test_cmyk_jpeg_becomes_rgb(tmp_path, astronaut):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(astronaut).convert("CMYK").save(path, quality=95)
    img = read_image(path)
    assert img.mode == "CMYK" and img.pixels.shape == (*astronaut.shape[:2], 3)
    assert np.abs(img.pixels.astype(int) - astronaut).mean() < 12


def test_rgb_jpeg_matches_pillow_decode(tmp_path, astronaut):
    path = _save(tmp_path / "a.jpg", astronaut, quality=90)
    img = read_image(path)
    np.testing.assert_array_equal(img.pixels, np.asarray(Image.open(path).convert("RGB")))


# ------------------------------------------------------------------------------ EXIF orientation


def test_exif_rotated_jpeg_comes_out_upright(tmp_path, astronaut):
    path = tmp_path / "rot6.jpg"
    # The camera stored the picture lying on its side: upright = stored rotated 90 degrees clockwise.
    stored = np.ascontiguousarray(np.rot90(astronaut, 1))  # 64 x 48
    Image.fromarray(stored).save(path, quality=95, exif=_exif(6))
    img = read_image(path)
    assert img.pixels.shape == astronaut.shape  # 48 x 64 again
    raw = np.asarray(Image.open(path).convert("RGB"))  # as stored, no EXIF applied
    np.testing.assert_array_equal(img.pixels, np.rot90(raw, -1))
    err_upright = np.abs(img.pixels.astype(int) - astronaut).mean()
    err_flipped = np.abs(img.pixels.astype(int) - astronaut[::-1, ::-1]).mean()
    assert err_upright < 6 < err_flipped


@pytest.mark.parametrize("orientation", range(1, 9))
def test_png_exif_orientation_exact(tmp_path, chelsea, orientation):
    path = _save(tmp_path / f"o{orientation}.png", chelsea, exif=_exif(orientation))
    img = read_image(path)
    np.testing.assert_array_equal(img.pixels, _UPRIGHT[orientation](chelsea))


def test_png_exif_orientation_with_alpha(tmp_path, coffee):
    alpha = np.tile(np.arange(coffee.shape[1], dtype=np.uint8) * 5, (coffee.shape[0], 1))
    path = _save(tmp_path / "o6a.png", np.dstack([coffee, alpha]), exif=_exif(6))
    img = read_image(path)
    np.testing.assert_array_equal(img.pixels, np.rot90(coffee, -1))
    np.testing.assert_array_equal(img.alpha, np.rot90(alpha, -1))


# ------------------------------------------------------------------------------ refused: 16-bit


def test_16bit_gray_png_refused(tmp_path, camera):
    path = tmp_path / "g16.png"
    path.write_bytes(imagecodecs.png_encode(camera.astype(np.uint16) * 257))
    with pytest.raises(ImageError, match="16-bit images are not supported") as exc:
        read_image(path)
    _assert_error_names_file(exc, path)


def test_16bit_gray_png_saved_by_pillow_refused(tmp_path, camera):
    path = tmp_path / "p16.png"
    Image.fromarray(camera.astype(np.uint16) * 257).save(path)
    with pytest.raises(ImageError, match="16-bit"):
        read_image(path)


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_16bit_colour_png_refused(tmp_path, astronaut, channels):
    # Pillow itself would silently load these as 8-bit RGB(A), so this must be caught up front.
    arr = astronaut.astype(np.uint16) * 257
    arr = np.dstack([arr, arr[:, :, :1]])[:, :, :channels] if channels != 3 else arr
    path = tmp_path / f"c16_{channels}.png"
    path.write_bytes(imagecodecs.png_encode(np.ascontiguousarray(arr)))
    with pytest.raises(ImageError, match="16-bit images are not supported") as exc:
        read_image(path)
    _assert_error_names_file(exc, path)


def test_16bit_rgb_tiff_refused(tmp_path, astronaut):
    path = tmp_path / "c16.tif"
    path.write_bytes(imagecodecs.tiff_encode(astronaut.astype(np.uint16) * 257))
    with pytest.raises(ImageError, match="16-bit"):
        read_image(path)


def test_16bit_ppm_refused(tmp_path, astronaut):
    h, w = astronaut.shape[:2]
    path = tmp_path / "c16.ppm"
    path.write_bytes(b"P6 %d %d 65535\n" % (w, h) + (astronaut.astype(">u2") * 257).tobytes())
    with pytest.raises(ImageError, match="16-bit"):
        read_image(path)


def test_16bit_pgm_refused(tmp_path, camera):
    h, w = camera.shape
    path = tmp_path / "g16.pgm"
    path.write_bytes(b"P5 %d %d 65535\n" % (w, h) + (camera.astype(">u2") * 257).tobytes())
    with pytest.raises(ImageError, match="16-bit images are not supported"):
        read_image(path)


def test_8bit_ppm_accepted(tmp_path, astronaut):
    h, w = astronaut.shape[:2]
    path = tmp_path / "c8.ppm"
    path.write_bytes(b"P6 %d %d 255\n" % (w, h) + astronaut.tobytes())
    np.testing.assert_array_equal(read_image(path).pixels, astronaut)


# ------------------------------------------------------------------------- refused: not an image


def test_eps_not_opened(tmp_path):
    path = tmp_path / "x.png"  # would make Pillow run Ghostscript if it were allowed to open it
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageError, match="not a supported image file"):
        read_image(path)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n" * 20)
    with pytest.raises(ImageError) as exc:
        read_image(path)
    _assert_error_names_file(exc, path)


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated_file(tmp_path, astronaut, ext):
    full = _save(tmp_path / f"full.{ext}", astronaut).read_bytes()
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(ImageError) as exc:
        read_image(path)
    _assert_error_names_file(exc, path)


def test_truncated_png_header(tmp_path, astronaut):
    path = tmp_path / "head.png"
    path.write_bytes(_save(tmp_path / "full.png", astronaut).read_bytes()[:20])
    with pytest.raises(ImageError) as exc:
        read_image(path)
    _assert_error_names_file(exc, path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(ImageError, match="not found") as exc:
        read_image(path)
    _assert_error_names_file(exc, path)


def test_directory(tmp_path):
    with pytest.raises(ImageError, match="directory") as exc:
        read_image(tmp_path)
    _assert_error_names_file(exc, tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty") as exc:
        read_image(path)
    _assert_error_names_file(exc, path)


def test_image_error_is_nlic_error():
    assert issubclass(ImageError, NlicError)


# ---------------------------------------------------------------------- size limits / bomb guard


def _png_chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG declaring the given size with almost no pixel data (cheap to make, fails to decode)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\x00" * 64)
    body = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_pillow_limit_is_explicit():
    assert Image.MAX_IMAGE_PIXELS is not None
    assert MAX_PIXELS >= 100_000_000


def test_large_real_photo_size_is_not_refused_as_too_large(tmp_path):
    # 96 megapixels declared: passes the size guard, then fails only because there is no data.
    path = _png_header_only(tmp_path / "big.png", 12_000, 8_000)
    with pytest.raises(ImageError, match="corrupt or truncated") as exc:
        read_image(path)
    assert "too large" not in str(exc.value)


def test_huge_declared_size_refused(tmp_path):
    path = _png_header_only(tmp_path / "bomb.png", 20_000, 20_000)  # 400 MP
    with pytest.raises(ImageError, match="too large") as exc:
        read_image(path)
    _assert_error_names_file(exc, path)


def test_own_pixel_limit(tmp_path, monkeypatch, astronaut):
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 100)
    path = _save(tmp_path / "a.png", astronaut)
    with pytest.raises(ImageError, match="too large"):
        read_image(path)


@pytest.mark.parametrize("pillow_limit", [1000, 2000])  # error (> 2x limit) and warning (> limit)
def test_pillow_decompression_bomb_turned_into_image_error(tmp_path, monkeypatch, astronaut, pillow_limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)  # image is 3072 px
    path = _save(tmp_path / "a.png", astronaut)
    with pytest.raises(ImageError, match="too large") as exc:
        read_image(path)
    _assert_error_names_file(exc, path)


# --------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("kind", ["L", "LA", "RGB", "RGBA"])
def test_write_png_roundtrip(tmp_path, camera, astronaut, kind):
    if kind.startswith("L"):
        pixels = camera[:, :, None]
    else:
        pixels = astronaut
    alpha = None
    if kind.endswith("A"):
        h, w = pixels.shape[:2]
        alpha = (np.arange(h * w) % 256).astype(np.uint8).reshape(h, w)
    path = tmp_path / "out.png"
    write_image(path, DecodedImage(pixels=pixels, alpha=alpha, mode=kind))
    assert Image.open(path).mode == kind
    back = read_image(path)
    np.testing.assert_array_equal(back.pixels, pixels)
    if alpha is None:
        assert back.alpha is None
    else:
        np.testing.assert_array_equal(back.alpha, alpha)
    assert not [p for p in os.listdir(tmp_path) if p != "out.png"]  # no temp files left


def test_write_accepts_2d_gray(tmp_path, camera):
    path = tmp_path / "g.png"
    write_image(path, DecodedImage(pixels=camera, alpha=None, mode="L"))
    np.testing.assert_array_equal(read_image(path).pixels[:, :, 0], camera)


@pytest.mark.parametrize("ext", [".tif", ".tiff", ".bmp", ".PNG"])
def test_write_other_lossless_formats(tmp_path, chelsea, ext):
    path = tmp_path / f"out{ext}"
    write_image(path, DecodedImage(pixels=chelsea, alpha=None, mode="RGB"))
    np.testing.assert_array_equal(read_image(path).pixels, chelsea)


def test_write_tiff_with_alpha(tmp_path, chelsea):
    alpha = np.full(chelsea.shape[:2], 7, np.uint8)
    path = tmp_path / "out.tif"
    write_image(path, DecodedImage(pixels=chelsea, alpha=alpha, mode="RGBA"))
    np.testing.assert_array_equal(read_image(path).alpha, alpha)


def test_write_bmp_with_alpha_refused(tmp_path, chelsea):
    path = tmp_path / "out.bmp"
    with pytest.raises(NlicError, match="alpha"):
        write_image(path, DecodedImage(pixels=chelsea, alpha=np.zeros(chelsea.shape[:2], np.uint8)))
    assert not path.exists()


@pytest.mark.parametrize("name", ["out.jpg", "out", "out.webp"])
def test_write_lossy_or_unknown_extension_refused(tmp_path, chelsea, name):
    with pytest.raises(NlicError, match="unsupported output image type"):
        write_image(tmp_path / name, DecodedImage(pixels=chelsea))
    assert os.listdir(tmp_path) == []


def test_write_existing_without_force(tmp_path, chelsea, camera):
    path = _save(tmp_path / "out.png", camera)
    before = path.read_bytes()
    with pytest.raises(NlicError, match="exists; use --force to overwrite"):
        write_image(path, DecodedImage(pixels=chelsea))
    assert path.read_bytes() == before
    write_image(path, DecodedImage(pixels=chelsea), force=True)
    np.testing.assert_array_equal(read_image(path).pixels, chelsea)


def test_decoded_image_validation():
    with pytest.raises(ValueError):
        DecodedImage(pixels=np.zeros((2, 2, 3), np.uint16))
    with pytest.raises(ValueError):
        DecodedImage(pixels=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError):
        DecodedImage(pixels=np.zeros((2, 2, 3), np.uint8), alpha=np.zeros((2, 3), np.uint8))
    assert DecodedImage(pixels=np.zeros((2, 2, 1), np.uint8), alpha=np.zeros((2, 2), np.uint8)).mode == "LA"


# ---------------------------------------------------------------------------------- atomic output


def test_atomic_write_bytes_new_file(tmp_path):
    path = tmp_path / "x.nlic"
    atomic_write_bytes(path, b"hello")
    assert path.read_bytes() == b"hello"
    assert os.listdir(tmp_path) == ["x.nlic"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_atomic_existing_without_force_unchanged(tmp_path):
    path = tmp_path / "x.nlic"
    path.write_bytes(b"old")
    with pytest.raises(NlicError, match="exists; use --force to overwrite") as exc:
        atomic_write_bytes(path, b"new")
    assert str(path) in str(exc.value)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.nlic"]


def test_atomic_force_overwrites(tmp_path):
    path = tmp_path / "x.nlic"
    path.write_bytes(b"old")
    atomic_write_bytes(path, b"new", force=True)
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["x.nlic"]


class _Boom(Exception):
    pass


@pytest.mark.parametrize("existing", [False, True])
def test_atomic_failure_leaves_nothing(tmp_path, existing):
    path = tmp_path / "x.png"
    if existing:
        path.write_bytes(b"old")
    with pytest.raises(_Boom), atomic_output(path, force=True) as tmp:
        assert tmp.parent == path.parent and tmp.name.endswith(".png") and tmp != path
        tmp.write_bytes(b"partial")
        raise _Boom
    if existing:
        assert path.read_bytes() == b"old"
        assert os.listdir(tmp_path) == ["x.png"]
    else:
        assert os.listdir(tmp_path) == []


def test_atomic_keyboard_interrupt_cleans_up(tmp_path):
    path = tmp_path / "x.nlic"
    with pytest.raises(KeyboardInterrupt), atomic_output(path) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_atomic_target_appearing_during_write_is_not_clobbered(tmp_path):
    path = tmp_path / "x.nlic"
    with pytest.raises(NlicError, match="exists"), atomic_output(path) as tmp:
        tmp.write_bytes(b"mine")
        path.write_bytes(b"someone else's")
    assert path.read_bytes() == b"someone else's"
    assert os.listdir(tmp_path) == ["x.nlic"]


def test_atomic_output_is_pillow_friendly(tmp_path, chelsea):
    path = tmp_path / "p.png"
    with atomic_output(path) as tmp:
        Image.fromarray(chelsea).save(tmp)  # format picked from the temp file's suffix
    np.testing.assert_array_equal(read_image(path).pixels, chelsea)


def test_atomic_bad_targets(tmp_path):
    with pytest.raises(NlicError, match="directory"):
        atomic_write_bytes(tmp_path, b"x", force=True)
    with pytest.raises(NlicError, match="does not exist"):
        atomic_write_bytes(tmp_path / "missing_dir" / "x.nlic", b"x")


def test_check_not_same_file(tmp_path, monkeypatch):
    a = tmp_path / "a.png"
    a.write_bytes(b"a")
    b = tmp_path / "b.png"
    check_not_same_file(a, b)  # output does not exist yet
    b.write_bytes(b"b")
    check_not_same_file(a, b)  # two different files
    with pytest.raises(NlicError, match="same file"):
        check_not_same_file(a, a)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NlicError, match="same file"):
        check_not_same_file("a.png", f"./{a.name}")
    with pytest.raises(NlicError, match="same file"):
        check_not_same_file(a, str(a))
    link = tmp_path / "link.png"
    link.symlink_to(a)
    with pytest.raises(NlicError, match="same file"):
        check_not_same_file(a, link)
    hard = tmp_path / "hard.png"
    os.link(a, hard)
    with pytest.raises(NlicError, match="same file"):
        check_not_same_file(hard, a)
    with pytest.raises(NlicError, match="same file"):  # neither exists: compare names
        check_not_same_file(tmp_path / "n.png", tmp_path / "." / "n.png")
