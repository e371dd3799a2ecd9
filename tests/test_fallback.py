"""Every image at a fair size: grey coded as one channel, and never larger than the stored fallback.

The adversarial images (noise, flat, saturated checkerboard, one-pixel lines) are coded with the
shipped model at tau 0, 2, 7 and 255: the bound holds, decoding is exact, and the file is never
larger than the plain fallback of its tiles plus the header and a few bytes per tile.
"""

from __future__ import annotations

import numpy as np
import pytest

from nlic.api import load_codec
from nlic.bitstream.container import STORED_JXL, STORED_PNG, Container
from nlic.coding import fallback

#: container header + trailing crc, and the framing of one tile (kind u8, length u32)
HEADER_BYTES = 42
TILE_FRAMING = 5


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    board = (np.indices((48, 64)).sum(0) % 2 * 255).astype(np.uint8)
    line = rng.integers(0, 256, (1, 300, 3), dtype=np.uint8)
    return {
        "rgb noise 128x96": rng.integers(0, 256, (96, 128, 3), dtype=np.uint8),
        "grey noise 90x100": rng.integers(0, 256, (100, 90), dtype=np.uint8),
        "flat 0": np.zeros((40, 50, 3), np.uint8),
        "flat 255 grey": np.full((33, 70), 255, np.uint8),
        "flat 137": np.full((20, 20, 3), 137, np.uint8),
        "checkerboard 0/255": np.repeat(board[..., None], 3, axis=2),
        "row 1x300": line,
        "column 300x1": np.ascontiguousarray(line.transpose(1, 0, 2)),
    }


@pytest.fixture(scope="module")
def codec():
    return load_codec(tile=64)


@pytest.mark.parametrize("tau", [0, 2, 7, 255])
def test_adversarial_images_cost_at_most_the_fallback(codec, tau: int) -> None:
    for name, img in _images().items():
        result = codec.compress(img, tau)
        restored = codec.decompress(result.data).pixels
        ref = img if img.ndim == 3 else img[..., None]
        assert restored.shape == ref.shape, name
        err = int(np.abs(restored.astype(np.int16) - ref.astype(np.int16)).max())
        assert err <= tau and (tau > 0 or err == 0), (name, tau, err)
        container = Container.from_bytes(result.data)
        bound = HEADER_BYTES
        for (y, x, h, w) in codec.image_codec._tiles(*ref.shape[:2], container.tile):
            bound += TILE_FRAMING + len(fallback.encode(np.ascontiguousarray(ref[y : y + h, x : x + w]), tau)[1])
        assert len(result.data) <= bound, (name, tau, len(result.data), bound)


def test_noise_costs_what_uniform_samples_cost(codec) -> None:
    """Incompressible content: about log2(levels) bits per sample, never more (RGB noise at tau 0:
    24 bpp, at tau 2: 3 x log2(52) = 17.1 bpp)."""
    img = _images()["rgb noise 128x96"]
    for tau in (0, 2):
        levels = fallback.levels(tau)
        assert codec.compress(img, tau).bpp <= 3 * np.log2(levels) * 1.01 + 8 * 64 / img[..., 0].size


def test_grey_is_one_channel(codec) -> None:
    """A grey image decodes to one channel and costs less than its RGB replica (whose G and B the
    channel-conditioned heads already predict from R)."""
    from skimage import data

    grey = np.ascontiguousarray(data.camera()[100:228, 100:260])
    one = codec.compress(grey, 0)
    three = codec.compress(np.repeat(grey[..., None], 3, axis=2), 0)
    assert one.mode == "L" and codec.decompress(one.data).pixels.shape == (128, 160, 1)
    assert one.bpp < three.bpp


def test_real_photos_take_the_learned_path(codec, photos) -> None:
    """On photos the learned code beats the stored fallback as a whole (the model earns its place);
    the fallback only ever removes bytes (a small tile of a noisy scan may still be cheaper as PNG,
    and is then stored so)."""
    learned_only = load_codec(tile=64, stored_fallback=False)
    for name, img in photos.items():
        for tau in (0, 2):
            learned = len(learned_only.compress(img, tau).data)
            stored = len(fallback.encode(img, tau)[1])
            assert learned < stored, (name, tau, learned, stored)
            assert len(codec.compress(img, tau).data) <= learned, (name, tau)


def test_tile_adaptation_pays_on_photos() -> None:
    """The encoder re-fits the output layers to a photo and keeps the fit where it pays: without
    log-scale offsets the tile carries an adaptation and the file gets smaller; with them (the
    default, which already takes most of what the fit gave) the fit is kept only if it still pays,
    so --adapt never makes a file larger.  Every file decodes exactly."""
    from skimage import data

    img = np.ascontiguousarray(data.astronaut()[:512, :512])  # one 512-pixel tile
    # (no JPEG XL tiles: at tau 0 this tile is a little smaller as JPEG XL, and the learned code is the study)
    bare, default = load_codec(fit_scales=False, jxl_tiles=False), load_codec(jxl_tiles=False)
    adapted, plain = bare.compress(img, 0, adapt=True), bare.compress(img, 0)
    assert all(t.adapt for t in Container.from_bytes(adapted.data).tiles)
    assert not any(t.adapt for t in Container.from_bytes(plain.data).tiles)
    assert len(adapted.data) < len(plain.data)
    both, scaled = default.compress(img, 0, adapt=True), default.compress(img, 0)
    assert len(both.data) <= len(scaled.data) < len(plain.data)
    for result in (adapted, plain, both, scaled):
        assert np.array_equal(default.decompress(result.data).pixels, img)


def test_jpeg_xl_where_it_pays(tmp_path, monkeypatch) -> None:
    """At tau 0 the encoder also codes the whole image as JPEG XL lossless and keeps it where it is
    smaller than the tiles: astronaut's top-left 512 x 512, in four 256-pixel tiles, is (JPEG XL's
    context tree beats the shipped model on it by ~3 %): the file is one JPEG XL tile covering the
    image (format 10) and decodes exactly in a fresh process; ``--no-jxl-tiles`` keeps the learned
    tiles.  At tau 2 the learned code wins, and JPEG XL is not even tried on a photo."""
    import subprocess
    import sys

    from PIL import Image
    from skimage import data

    from nlic.bitstream.container import LEARNED_KINDS

    img = np.ascontiguousarray(data.astronaut()[:512, :512])
    src = tmp_path / "astronaut.png"
    Image.fromarray(img).save(src)
    for flags, jxl in (([], True), (["--no-jxl-tiles"], False)):
        nl, out = tmp_path / f"a{jxl}.nlic", tmp_path / f"a{jxl}.png"
        subprocess.run([sys.executable, "-m", "nlic.cli.main", "compress", str(src), str(nl), "--tile", "256", *flags],
                       check=True)
        subprocess.run([sys.executable, "-m", "nlic.cli.main", "decompress", str(nl), str(out)], check=True)
        assert np.array_equal(np.asarray(Image.open(out)), img)
        container = Container.from_bytes(nl.read_bytes())
        kinds = [t.kind for t in container.tiles]
        assert kinds == [STORED_JXL] if jxl else (len(kinds) == 4 and set(kinds) <= set(LEARNED_KINDS)), kinds
        assert (container.version, container.tile) == ((10, 512) if jxl else (9, 256))
    assert (tmp_path / "aTrue.nlic").stat().st_size < (tmp_path / "aFalse.nlic").stat().st_size
    # no lossless file is larger than JPEG XL's code of the image plus the header and one tile's framing
    assert (tmp_path / "aTrue.nlic").stat().st_size <= len(fallback.jxl_encode(img)) + HEADER_BYTES + TILE_FRAMING
    import imagecodecs

    calls = []
    encode = imagecodecs.jpegxl_encode
    monkeypatch.setattr(imagecodecs, "jpegxl_encode", lambda *a, **k: calls.append(1) or encode(*a, **k))
    coded = load_codec().compress(img, 2)
    assert all(t.kind in LEARNED_KINDS for t in Container.from_bytes(coded.data).tiles) and not calls


def test_jpeg_xl_tiles_in_a_synthetic_image() -> None:
    """A tile whose fastest PNG comes close to the learned code (content unlike photos) is tried as
    JPEG XL at any tau: scikit-image's horse silhouette at tau 2 in 128-pixel tiles keeps JPEG XL
    tiles beside a learned one, within the bound."""
    from skimage import data

    from nlic.bitstream.container import LEARNED_KINDS

    img = np.ascontiguousarray((data.horse()[:256, :256] * 255).astype(np.uint8))
    codec = load_codec(tile=128)
    coded = codec.compress(img, 2)
    kinds = [t.kind for t in Container.from_bytes(coded.data).tiles]
    assert STORED_JXL in kinds and any(k in LEARNED_KINDS for k in kinds), kinds
    restored = codec.decompress(coded.data).pixels[..., 0]
    assert np.abs(restored.astype(int) - img).max() <= 2
    assert len(load_codec(tile=128, jxl_tiles=False).compress(img, 2).data) > len(coded.data)


def test_a_one_tile_image_is_coded_as_jpeg_xl_once(monkeypatch) -> None:
    """At tau 0 a synthetic image of one tile, whose PNG comes close to the learned code, is coded
    as JPEG XL by the whole-image job only (its tile would code the same samples again), and the
    file keeps that code: scikit-image's checkerboard (200 x 200)."""
    import imagecodecs
    from skimage import data

    img = np.ascontiguousarray(data.checkerboard())
    calls = []
    encode = imagecodecs.jpegxl_encode
    monkeypatch.setattr(imagecodecs, "jpegxl_encode", lambda *a, **k: calls.append(1) or encode(*a, **k))
    codec = load_codec()
    coded = codec.compress(img, 0)
    assert [t.kind for t in Container.from_bytes(coded.data).tiles] == [STORED_JXL] and len(calls) == 1
    assert np.array_equal(codec.decompress(coded.data).pixels[..., 0], img)


@pytest.mark.parametrize("shape", [(512, 512), (28, 512), (448, 28), (1, 300), (300, 1), (7, 5), (480, 640),
                                   (96, 128), (200, 80)])
def test_stored_tile_sizes_are_read_from_their_headers(shape) -> None:
    """The decoder reads a stored PNG's or JPEG XL tile's size from its header before decoding it
    (every size class of JPEG XL's SizeHeader: multiples of 8, aspect ratios, large and small)."""
    import imagecodecs

    rng = np.random.default_rng(sum(shape))
    for channels in (1, 3):
        plane = rng.integers(0, 5, shape if channels == 1 else (*shape, 3), dtype=np.uint8)
        jxl = bytes(imagecodecs.jpegxl_encode(plane, lossless=True, effort=1, numthreads=1))
        assert fallback._jxl_header(jxl) == (*shape, 0)
        assert fallback.png_size(bytes(imagecodecs.png_encode(plane))) == shape
        decoded = fallback.decode(STORED_JXL, jxl, (*shape, channels), 0)
        assert np.array_equal(decoded, plane.reshape(*shape, channels))


def test_stored_tile_bombs_are_refused_before_decoding(monkeypatch) -> None:
    """A valid PNG or JPEG XL claiming a far larger image than its tile is refused from its header:
    the decoder is never called (it would allocate the whole image first)."""
    import imagecodecs

    from nlic.errors import BitstreamError

    big = np.zeros((3000, 3000), np.uint8)
    bombs = {STORED_PNG: bytes(imagecodecs.png_encode(big)),
             STORED_JXL: bytes(imagecodecs.jpegxl_encode(big, lossless=True, effort=1))}
    calls = []
    monkeypatch.setattr(imagecodecs, "png_decode", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(imagecodecs, "jpegxl_decode", lambda *a, **k: calls.append(1))
    for kind, bomb in bombs.items():
        with pytest.raises(BitstreamError, match="does not match its size"):
            fallback.decode(kind, bomb, (64, 64, 1), 0)
        with pytest.raises(BitstreamError, match="cannot be decoded"):
            fallback.decode(kind, b"\x00" + bomb[1:], (64, 64, 1), 0)
    assert not calls


def _codestream(data: bytes) -> bytes:
    """The bare codestream of a JPEG XL file (its ``jxlc`` box, or the file itself when bare)."""
    at = 0
    while data[:2] != b"\xff\x0a" and at < len(data):
        size, kind = int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8]
        if kind == b"jxlc":
            return data[at + 8 : at + size] if size else data[at + 8 :]
        at += size
    return data


@pytest.mark.parametrize("extra", [1, 2, 16, 99])
def test_jpeg_xl_tiles_with_extra_channels_are_refused_before_decoding(monkeypatch, extra: int) -> None:
    """A JPEG XL tile of the right size that carries extra channels (a few hundred bytes for a
    hundred tile-sized planes: 100 MB decoded for a 1000 x 1000 tile) is refused from its header;
    the encoder never writes any.  Every coding of their count (1, 2..17, 18..4113) is read."""
    import imagecodecs

    from nlic.errors import BitstreamError

    planes = np.zeros((extra + 1, 300, 200), np.uint8)
    bomb = _codestream(bytes(imagecodecs.jpegxl_encode(planes, lossless=True, effort=1, planar=True,
                                                       photometric="MINISBLACK")))
    assert fallback._jxl_header(bomb) == (300, 200, extra)
    calls = []
    monkeypatch.setattr(imagecodecs, "jpegxl_decode", lambda *a, **k: calls.append(1))
    with pytest.raises(BitstreamError, match="extra channels"):
        fallback.decode(STORED_JXL, bomb, (300, 200, 1), 0)
    assert not calls


def test_an_animated_jpeg_xl_tile_decodes_one_frame() -> None:
    """A crafted JPEG XL tile of many frames (a few kB for hundreds of tile-sized frames) is decoded
    to its first frame only: the decoder's memory stays one tile's, whatever the frame count."""
    import imagecodecs

    frames = np.random.default_rng(0).integers(0, 4, (400, 64, 64), dtype=np.uint8)
    bomb = bytes(imagecodecs.jpegxl_encode(frames, lossless=True, effort=1, photometric="MINISBLACK"))
    assert np.array_equal(fallback.decode(STORED_JXL, bomb, (64, 64, 1), 0)[..., 0], frames[0])


def _coded_on_one_two_three_threads(img: np.ndarray, log: list, check) -> bytes:
    """``img`` coded at tau 0 in 256-pixel tiles on one, two and three threads (``log`` cleared
    before each, ``check(threads)`` after it): the file, the same bytes each time, decoded exactly."""
    files = []
    for threads in (1, 2, 3):
        codec = load_codec(tile=256)
        codec.image_codec.threads = threads
        log.clear()
        files.append(codec.compress(img, 0).data)
        check(threads)
    assert files[0] == files[1] == files[2]
    assert np.array_equal(codec.decompress(files[0]).pixels, img)
    return files[0]


def test_probe_tiles_decide_early_for_jpeg_xl(monkeypatch) -> None:
    """At tau 0 the largest tiles (a third of the image) are coded first, learned and as JPEG XL;
    where JPEG XL wins them by the margin the other tiles are never coded and the image is stored
    as JPEG XL (a retina photo in four 256-pixel tiles: two coded); where it does not (astronaut),
    every tile is coded and the smaller of the two codes kept.  One thread, two, or three (the whole
    image's JPEG XL code then starts beside the two probe tiles): the same bytes."""
    from skimage import data

    from nlic.coding.image import ImageCodec

    calls = []
    encode_tile = ImageCodec._encode_tile
    monkeypatch.setattr(ImageCodec, "_encode_tile", lambda self, *a: calls.append(1) or encode_tile(self, *a))
    for img, coded_tiles in ((np.ascontiguousarray(data.retina()[360:872, 300:812]), 2),
                             (np.ascontiguousarray(data.astronaut()[:512, :512]), 4)):
        def check(threads: int, coded_tiles: int = coded_tiles) -> None:
            assert len(calls) == coded_tiles

        file = _coded_on_one_two_three_threads(img, calls, check)
        assert [t.kind for t in Container.from_bytes(file).tiles] == [STORED_JXL]


def test_probe_tiles_skip_the_whole_image_jpeg_xl_where_the_learned_code_wins(monkeypatch) -> None:
    """Where the probe tiles' learned code is under JXL_PROBE_LEARNED_MARGIN times their JPEG XL
    code, the whole image is never coded as JPEG XL: every tile is coded and kept (astronaut's crop
    in four tiles, with the margin raised so that its probe qualifies; a tile may still be stored as
    JPEG XL on its own).  One thread or two: the same bytes, decoded exactly; and with three, where
    the whole image's JPEG XL code starts beside the probe and is dropped."""
    from skimage import data

    import nlic.coding.image as image_module

    img = np.ascontiguousarray(data.astronaut()[:512, :512])
    shapes = []
    jxl_encode = fallback.jxl_encode
    monkeypatch.setattr(fallback, "jxl_encode", lambda level, *a: shapes.append(level.shape) or jxl_encode(level, *a))
    monkeypatch.setattr(image_module, "JXL_PROBE_LEARNED_MARGIN", 2.0)
    def check(threads: int) -> None:
        assert (256, 256, 3) in shapes and (threads == 3 or img.shape not in shapes)  # the probe's tiles

    container = Container.from_bytes(_coded_on_one_two_three_threads(img, shapes, check))
    assert (container.tile, len(container.tiles)) == (256, 4)  # tiles (some stored as JPEG XL), not one image tile


def test_no_whole_image_jpeg_xl_beyond_its_size_limit(monkeypatch) -> None:
    """Above JXL_WHOLE_MAX_PIXELS the encoder keeps to its tiles (the whole-image JPEG XL pass would
    hold some 22 bytes a pixel): astronaut's crop, stored whole as JPEG XL under the limit, keeps its
    four tiles (learned, or stored where that is smaller)."""
    from skimage import data

    import nlic.coding.image as image_module
    from nlic.bitstream.container import LEARNED_KINDS

    img = np.ascontiguousarray(data.astronaut()[:256, :256])
    codec = load_codec(tile=128)
    assert [t.kind for t in Container.from_bytes(codec.compress(img, 0).data).tiles] == [STORED_JXL]
    monkeypatch.setattr(image_module, "JXL_WHOLE_MAX_PIXELS", 256 * 256 - 1)
    container = Container.from_bytes(codec.compress(img, 0).data)
    assert (container.tile, len(container.tiles)) == (128, 4)
    assert any(t.kind in LEARNED_KINDS for t in container.tiles)
