"""Every image at a fair size: grey coded as one channel, and never larger than the stored fallback.

The adversarial images (noise, flat, saturated checkerboard, one-pixel lines) are coded with the
shipped model at tau 0, 2, 7 and 255: the bound holds, decoding is exact, and the file is never
larger than the plain fallback of its tiles plus the header and a few bytes per tile.
"""

from __future__ import annotations

import numpy as np
import pytest

from nlic.api import load_codec
from nlic.bitstream.container import Container
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
    bare, default = load_codec(fit_scales=False), load_codec()
    adapted, plain = bare.compress(img, 0, adapt=True), bare.compress(img, 0)
    assert all(t.adapt for t in Container.from_bytes(adapted.data).tiles)
    assert not any(t.adapt for t in Container.from_bytes(plain.data).tiles)
    assert len(adapted.data) < len(plain.data)
    both, scaled = default.compress(img, 0, adapt=True), default.compress(img, 0)
    assert len(both.data) <= len(scaled.data) < len(plain.data)
    for result in (adapted, plain, both, scaled):
        assert np.array_equal(default.decompress(result.data).pixels, img)
