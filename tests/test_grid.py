"""Per-patch grid offsets of the residual quantizer (format 3, ``nlic.coding.grid``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nlic.bitstream.container import KIND_VERSION, LEARNED, LEARNED_KINDS, Container
from nlic.coding import grid
from nlic.errors import BitstreamError
from nlic.residual.quantizer import bin_width, grid_offsets, quantize_residual, shift_grid


@pytest.mark.parametrize("tau", [1, 2, 5, 127, 255])
def test_offsets_pack_and_unpack(tau: int) -> None:
    offsets = torch.from_numpy(np.random.default_rng(tau).integers(-tau, tau + 1, (37, 3)))
    offsets[0] = torch.tensor([-tau, 0, tau])
    data = grid.pack(offsets, tau)
    assert len(data) == -(-37 * 3 * grid.offset_bits(tau) // 8)
    assert torch.equal(grid.unpack(data, (37, 3), tau), offsets)


def test_corrupt_offsets_are_refused() -> None:
    data = grid.pack(torch.zeros(4, 3, dtype=torch.long), 2)
    with pytest.raises(BitstreamError, match="grid offsets do not match"):
        grid.unpack(data[:-1], (4, 3), 2)
    with pytest.raises(BitstreamError, match="out of range"):  # 3 bits hold 0..7, tau 2 allows 0..4
        grid.unpack(b"\xff" * len(data), (4, 3), 2)


def test_a_flat_patch_on_a_bin_edge_gets_a_grid_that_holds_it() -> None:
    """A patch of 130 +- 1 with x_hat = 128 at tau 2 straddles the bin edge at +2.5; the chosen
    offset puts the whole patch in one bin, and a patch already centred keeps offset 0."""
    rng = np.random.default_rng(0)
    flat = torch.from_numpy(130.0 + rng.integers(-1, 2, (1, 3, 64, 64)))
    centred = torch.from_numpy(128.0 + rng.integers(-1, 2, (1, 3, 64, 64)))
    pixels = torch.cat([flat, centred]).float()
    x_hat = torch.full_like(pixels, 128.0)
    before = torch.div(quantize_residual(pixels - x_hat, 2), bin_width(2), rounding_mode="floor")
    assert len(torch.unique(before[0])) == 2
    offsets = grid_offsets(pixels, x_hat, 2)
    assert (offsets[1] == 0).all()
    after = torch.div(quantize_residual(pixels - shift_grid(x_hat, offsets), 2), bin_width(2), rounding_mode="floor")
    assert all(len(torch.unique(after[p, c])) == 1 for p in range(2) for c in range(3))


@pytest.fixture(scope="module")
def codecs(tiny_model):
    from nlic.api import load_codec

    return (load_codec(tiny_model, tile=64, stored_fallback=False).image_codec,
            load_codec(tiny_model, tile=64, stored_fallback=False, shift_grids=False, fit_scales=False).image_codec)


def test_shifted_grids_are_exact_and_keep_the_bound(codecs, photos) -> None:
    """Shifted tiles (a lossy layer's image moved per patch) decode to the encoder's reconstruction
    within tau; tau 0 tiles never shift; tiles with grids are format 3 (4 with per-patch scale
    offsets); with grids and scale offsets off, files are format 2."""
    shifted, fixed = codecs
    for name in ("astronaut", "chelsea"):
        img = photos[name]
        for tau in (0, 2, 5):
            out = shifted.compress(img, tau)
            c = Container.from_bytes(out.data)
            kinds = {t.kind for t in c.tiles}
            if tau == 0:
                assert not any(t.grid for t in c.tiles)
            else:
                assert kinds <= set(LEARNED_KINDS) - {LEARNED}, (name, tau)  # format 3 or later
                assert all(t.grid for t in c.tiles), (name, tau)
                assert c.version == max(KIND_VERSION[k] for k in kinds), (name, tau)
            dec = fixed.decompress(out.data).pixels  # the same decoder reads both
            assert int(np.abs(dec.astype(int) - img.astype(int)).max()) <= tau, (name, tau)
            old = fixed.compress(img, tau)
            assert Container.from_bytes(old.data).version == 2
            assert {t.kind for t in Container.from_bytes(old.data).tiles} == {LEARNED}
            assert int(np.abs(shifted.decompress(old.data).pixels.astype(int) - img.astype(int)).max()) <= tau


def test_a_tile_newer_than_its_file_is_refused(codecs, photos) -> None:
    """A format 3 to 7 tile in a file whose version predates it is refused by name."""
    shifted, _ = codecs
    c = Container.from_bytes(shifted.compress(photos["chelsea"], 2).data)
    kinds = {t.kind for t in c.tiles}
    for version in (2, 3, 4, 5, 6):
        newer = sorted(k for k in kinds if k > version)
        if not newer:
            continue
        c.version = version
        with pytest.raises(BitstreamError, match=f"unknown tile kind ({'|'.join(map(str, newer))})"):
            shifted.decompress(c.to_bytes())
    assert any(KIND_VERSION[k] > 3 for k in kinds)  # so the format 3 case ran


@pytest.mark.slow
def test_shifted_grids_pay_on_a_smooth_photo() -> None:
    """The default model on a smooth real photo (sky): shifted grids cost less at every tau >= 1."""
    from skimage import data

    from nlic.api import load_codec

    sky = np.ascontiguousarray(data.astronaut()[:128, 320:512])  # flat studio backdrop
    shifted = load_codec(tile=512, fit_scales=False).image_codec
    fixed = load_codec(tile=512, shift_grids=False, fit_scales=False).image_codec
    for tau in (1, 2, 4):
        a, b = shifted.compress(sky, tau), fixed.compress(sky, tau)
        assert a.bpp < b.bpp, (tau, a.bpp, b.bpp)
        assert int(np.abs(shifted.decompress(a.data).pixels.astype(int) - sky.astype(int)).max()) <= tau


def _fewest_changes_reference(r: torch.Tensor, tau: int) -> torch.Tensor:
    """The definition: every offset tried in turn, bins counted, ties to the smaller |offset| and
    then the negative one."""
    w = bin_width(tau)
    costs = []
    for o in range(-tau, tau + 1):
        k = torch.div(quantize_residual(r - o, tau), w, rounding_mode="floor")
        changes = (k[..., 1:, :] != k[..., :-1, :]).sum((-1, -2)) + (k[..., :, 1:] != k[..., :, :-1]).sum((-1, -2))
        costs.append(changes.double() + 1e-3 * abs(o))
    return torch.stack(costs, -1).argmin(-1) - tau


@pytest.mark.parametrize("tau", [1, 2, 3, 5, 40])
def test_compiled_grid_offsets_are_the_definition(tau: int) -> None:
    """The compiled count over neighbour pairs picks the offsets of the definition: smooth patches
    (small steps, where offsets differ), noisy ones (steps of a bin or more), flat ones (ties)."""
    rng = np.random.default_rng(tau)
    smooth = 3 * tau + np.cumsum(rng.integers(-1, 2, (6, 3, 64, 64)), -1) // 4
    noisy = rng.integers(-200, 200, (4, 3, 64, 64))
    flat = np.full((2, 3, 64, 64), 7)
    r = torch.from_numpy(np.concatenate([smooth, noisy, flat])).float()
    x_hat = torch.full_like(r, 128.0)
    got = grid_offsets(r + x_hat, x_hat, tau)
    assert torch.equal(got, _fewest_changes_reference(r, tau))
    assert len(torch.unique(got)) > 1
    fractional = grid_offsets(r + x_hat, x_hat + 0.5, tau)  # not integers: the plain definition
    assert torch.equal(fractional, _fewest_changes_reference(r - 0.5, tau))
