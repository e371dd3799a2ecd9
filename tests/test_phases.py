"""Format 11's offsets per pixel phase: the geometry, the scales field, and what they do to real
photos that once were JPEGs."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest
from skimage import data

from nlic.bitstream.container import LEARNED_V9, LEARNED_V11, Container
from nlic.coding import scale_fields, scales
from nlic.errors import BitstreamError

PATCH = 64


def _was_a_jpeg(image: np.ndarray, quality: int = 90) -> np.ndarray:
    """``image`` after a round trip through JPEG (4:2:0 chroma): the 8x8 block grid many photos keep."""
    return np.asarray(imagecodecs.jpeg8_decode(imagecodecs.jpeg8_encode(image, level=quality, subsampling="420")))


def test_a_symbols_phase_is_its_place_in_the_8x8_grid_of_the_tile() -> None:
    """Flat indices into ``[P, 64, 64]`` patches (a tile's patches row-major) give the row and column
    modulo 8 of the pixel in the tile (patches start on the grid)."""
    tile_patches = 3  # a 192 x 192 tile: 3 x 3 patches
    index = np.arange(tile_patches * tile_patches * PATCH * PATCH)
    patch, pixel = index // (PATCH * PATCH), index % (PATCH * PATCH)
    row = patch // tile_patches * PATCH + pixel // PATCH
    col = patch % tile_patches * PATCH + pixel % PATCH
    phase = scales.phase_of(index, PATCH)
    assert np.array_equal(phase, row % 8 * 8 + col % 8)
    assert np.bincount(phase).tolist() == [len(index) // scales.PHASES] * scales.PHASES


def test_format_11_field_packs_unpacks_and_refuses_corrupt_fields() -> None:
    """Format 11's scales field is format 9's followed by the phase offsets (a 64-bit mask and a
    signed byte per set phase, per channel); read as format 9, cut, lengthened or with no phase
    offset at all it is refused."""
    rng = np.random.default_rng(11)
    deltas = rng.integers(scale_fields.DELTA_MIN, scale_fields.DELTA_MAX + 1, size=(4, 3))
    means = np.zeros((3, scales.MEAN_SOURCES, scales.MEAN_LEVELS), dtype=np.int64)
    means[2, scales.CHANNEL_SOURCES, 3] = 5  # B: an offset of its first predictor source
    phases = np.zeros((3, scales.PHASES), dtype=np.int64)
    phases[0, [7, 56, 63]] = [4, -3, 9]
    phases[2, 0] = -12
    choice = scale_fields.ScaleChoice([1, 0, -2], deltas, [8, 8, 16], None, means, fine=True, phases=phases)
    field = choice.pack()
    got = scale_fields.unpack_fine(field, 4, 3, phases=True)
    assert np.array_equal(got.phases, phases) and np.array_equal(got.means, means)
    assert np.array_equal(got.per_patch, choice.per_patch(4)) and got.sharpness == [8, 8, 16]
    nine = scale_fields.ScaleChoice([1, 0, -2], deltas, [8, 8, 16], None, means, fine=True).pack()
    assert field.startswith(nine) and len(field) == len(nine) + 3 * 8 + 4
    assert scale_fields.unpack_fine(nine, 4, 3).phases is None
    for bad in (field[:-1], field + b"\x00"):
        with pytest.raises(BitstreamError, match="do not match"):
            scale_fields.unpack_fine(bad, 4, 3, phases=True)
    with pytest.raises(BitstreamError, match="do not match"):
        scale_fields.unpack_fine(field, 4, 3)  # format 11's field read as format 9's
    with pytest.raises(BitstreamError, match="without phase offsets"):
        scale_fields.unpack_fine(nine + bytes(3 * 8), 4, 3, phases=True)


def _coded(codec, fresh, image: np.ndarray, tau: int) -> tuple[int, set[int], int]:
    out = codec.compress(image, tau)
    decoded = fresh.decompress(out.data).pixels.reshape(image.shape)
    error = int(np.abs(decoded.astype(int) - image.astype(int)).max())
    assert error <= tau, (tau, error)
    c = Container.from_bytes(out.data)
    return len(out.data), {t.kind for t in c.tiles}, c.version


def test_phase_offsets_pay_on_a_photo_that_was_a_jpeg(monkeypatch) -> None:
    """On a photo that went through JPEG the encoder finds phase offsets (format 11) and the file
    is smaller than without them (format 9) at tau 0 and no larger at tau 2; every file decodes
    within tau by a fresh codec.  Beside it, a photo that never was a JPEG keeps format 9 tiles, and
    the two kinds decode together in lockstep (one thread: one group)."""
    from nlic.api import load_codec

    codec = load_codec(tile=256, stored_fallback=False).image_codec
    codec.threads = 1
    fresh = load_codec().image_codec
    fresh.threads = 1
    jpeg = _was_a_jpeg(np.ascontiguousarray(data.chelsea()[:256, :256]))
    for tau in (0, 2):
        sizes = {}
        for phases in (True, False):
            monkeypatch.setattr(codec.coder(tau), "phases", phases)
            sizes[phases], kinds, version = _coded(codec, fresh, jpeg, tau)
            assert (LEARNED_V11 in kinds) == (version == 11) and (phases or version < 11), (tau, kinds)
            assert LEARNED_V11 in kinds or not phases or tau > 0, "no phase offsets at tau 0"
        assert sizes[True] < sizes[False] if tau == 0 else sizes[True] <= sizes[False] * 1.002, (tau, sizes)
    monkeypatch.setattr(codec.coder(0), "phases", True)
    both = np.concatenate([jpeg, np.ascontiguousarray(data.astronaut()[:256, 128:384])], axis=1)
    _, kinds, version = _coded(codec, fresh, both, 0)
    assert kinds == {LEARNED_V9, LEARNED_V11} and version == 11
