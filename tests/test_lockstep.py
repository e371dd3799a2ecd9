"""Tiles decoded in lockstep, and the compiled requantizer: the speed paths give the integers of the
plain ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from nlic.bitstream.container import LEARNED, LEARNED_V3, LEARNED_V4, Container, TileChunk
from nlic.coding.image import LOCKSTEP_PIXELS, _PendingTile, _TileItem
from nlic.residual.integer import Requantizer


def test_the_compiled_requantizer_is_the_torch_arithmetic() -> None:
    """``clamp(floor(acc * 2**shift + 0.5), low, high) - offset``, in place, on 2-D rows, on strided
    views (the padded outputs) and on whole patches (4-D)."""
    rng = np.random.default_rng(0)
    q = Requantizer.of(torch.tensor([-3, 0, 2, -7]), [-100, 0, -50, 0], [100, 4095, 50, 4095], [0, 0, 5, 0])

    def expected(acc: torch.Tensor) -> torch.Tensor:
        return (acc * q.scale + 0.5).floor().clamp(min=q.low, max=q.high) - q.offset

    padded = torch.from_numpy(rng.integers(-2**20, 2**20, (300, 8))).float()
    padded[:10, :4] = torch.tensor([3.0, -3.0, 1.0, 64.0])  # exact halves round up
    want = expected(padded[:, :4])
    view = padded[:, :4]
    assert not view.is_contiguous()
    got = q(view)
    assert torch.equal(got, want) and got.data_ptr() == padded.data_ptr()  # in place
    whole = torch.from_numpy(rng.integers(-2**16, 2**16, (2, 5, 6, 4))).float()
    assert torch.equal(q(whole.clone()), expected(whole))


@pytest.fixture(scope="module")
def codec(tiny_model):
    from nlic.api import load_codec

    return load_codec(tiny_model, tile=64, stored_fallback=False).image_codec


def _pending(codec, data: bytes) -> tuple[Container, list[_PendingTile]]:
    c = Container.from_bytes(data)
    sizes = [(h, w) for _, _, h, w in codec._tiles(c.height, c.width, c.tile)]
    return c, [codec._prepare_tile(chunk, h, w, 3, c.tau) for (h, w), chunk in zip(sizes, c.tiles)]


@pytest.mark.parametrize("tau", [2, 5])
def test_tiles_decoded_in_lockstep_are_the_tiles_decoded_alone(codec, photos, tau: int) -> None:
    """Each tile's stream is read as if it were decoded alone: the same bins, tile by tile (grid and
    log-scale offsets of their own, partial tiles, lossy features)."""
    out = codec.compress(photos["astronaut"], tau)  # 96 x 128: four tiles of 64, two of them partial
    _, pending = _pending(codec, out.data)
    assert len(pending) == 4
    coder = codec.coder(tau)
    streams = [p.stream for p in pending]
    together = coder.decode_tiles(streams, tau)
    for s, bins in zip(streams, together):
        assert torch.equal(bins, coder.decode_tiles([s], tau)[0])
    assert any(s.mean_offsets is not None for s in streams)  # (format 6 tiles: their mean offsets ran)
    assert any(s.least_squares is not None for s in streams)  # (format 9 tiles: their least-squares source)
    mixed = [streams[0], dataclasses.replace(streams[1], patches=dataclasses.replace(streams[1].patches,
                                                                                     context_limit=None))]
    with pytest.raises(ValueError, match="share the context clamp"):
        coder.decode_tiles(mixed, tau)


@pytest.mark.parametrize("tau", [0, 2])
def test_files_decode_the_same_with_any_grouping(tiny_model, photos, tau: int) -> None:
    """One thread (all tiles in one lockstep group) and three threads (three groups) decode a file to
    the encoder's reconstruction."""
    from nlic.api import load_codec

    img = photos["astronaut"]  # four tiles of 64
    out = load_codec(tiny_model, tile=64, stored_fallback=False).image_codec.compress(img, tau)
    decoder = load_codec(tiny_model).image_codec
    results = []
    for threads in (1, 3):
        decoder.threads = threads
        results.append(decoder.decompress(out.data).pixels)
    assert np.array_equal(results[0], results[1])
    assert int(np.abs(results[0].astype(int) - img.astype(int)).max()) <= tau


def _item(index: int, height: int, width: int, kind: int = LEARNED_V3, adapt: bytes = b"") -> _TileItem:
    return _TileItem(index, TileChunk(kind, adapt=adapt), height, width)


def test_lockstep_groups_balance_area_and_keep_odd_tiles_apart(codec) -> None:
    tiles = [_item(0, 512, 512), _item(1, 512, 512, kind=LEARNED_V4), _item(2, 512, 256), _item(3, 256, 512),
             _item(4, 256, 256), _item(5, 512, 512, adapt=b"x"), _item(6, 512, 512, kind=LEARNED)]
    codec.threads = 2
    groups = [[t.index for t in g] for g in codec._lockstep_groups(tiles)]
    assert sorted(i for g in groups for i in g) == list(range(7))
    assert [5] in groups and [6] in groups  # adapted layers alone; format 2 (no context clamp) apart
    shared = [g for g in groups if 5 not in g and 6 not in g]
    assert len(shared) == 2
    area = [sum(tiles[i].area for i in g) for g in shared]
    assert abs(area[0] - area[1]) <= 512 * 512
    many = [_item(i, 512, 512) for i in range(12)]  # 3 MP: groups hold at most LOCKSTEP_PIXELS
    big = codec._lockstep_groups(many)
    assert all(sum(t.area for t in g) <= LOCKSTEP_PIXELS for g in big)
    assert len(big) == -(-12 * 512 * 512 // LOCKSTEP_PIXELS) > 2
