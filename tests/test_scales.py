"""Per-tile log-scale offsets (``nlic.coding.scales``)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from nlic.bitstream.container import LEARNED_V3, Container
from nlic.coding import scales
from nlic.errors import BitstreamError


def test_offsets_pack_and_unpack() -> None:
    assert scales.pack([0, 0, 0]) == b""
    assert scales.unpack(b"", 3) == [0, 0, 0]
    assert scales.unpack(scales.pack([-8, 0, 4]), 3) == [-8, 0, 4]
    with pytest.raises(BitstreamError, match="log-scale offsets"):
        scales.unpack(b"\x01\x02", 3)


def test_offsets_stay_on_the_grid() -> None:
    from nlic.residual.integer import LOG_SCALE_LEVELS

    idx = np.array([[0, 5, LOG_SCALE_LEVELS - 1]])
    assert scales.apply(idx, -8).tolist() == [[0, 0, LOG_SCALE_LEVELS - 9]]
    assert scales.apply(idx, 4).tolist() == [[4, 9, LOG_SCALE_LEVELS - 1]]


@pytest.fixture(scope="module")
def default_codecs():
    from nlic.api import load_codec

    return (load_codec(tile=512, stored_fallback=False).image_codec,
            load_codec(tile=512, stored_fallback=False, fit_scales=False).image_codec)


def test_the_estimate_the_choice_rests_on_matches_the_real_code(default_codecs) -> None:
    """The encoder's float estimate of a tile's bits under its integer mixtures is within 1 % of the
    residual stream it then writes (the choice is made on the right quantity)."""
    import torch

    codec, _ = default_codecs
    img = np.ascontiguousarray(data.chelsea()[:256, :256])
    coder = codec.coder(0)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    x_hat = torch.full_like(x, 128.0)
    patches = codec._patches(x_hat, None, 256, 256, 0, 3, coder.head)
    from nlic.residual.patches import patchify

    bins = patchify((x - x_hat).long())
    params = coder.whole_mixtures(bins, patches, 0)
    estimate = sum(
        scales._CodeLength(*(t.numpy().reshape(-1, t.shape[-1]) for t in (p.logits, p.means, p.log_scales)),
                           bins[:, c].numpy().reshape(-1), patches.lo[:, c].numpy().reshape(-1),
                           patches.hi[:, c].numpy().reshape(-1), 0)(0)
        for c, p in enumerate(params))
    real = 8 * len(coder.encode(params, bins, patches, 0))
    assert abs(real - estimate) < 0.01 * real, (real, estimate)


def test_offsets_pay_on_a_photo_and_decode_exactly(default_codecs) -> None:
    """On astronaut (a studio photo unlike the training crops) the encoder moves the scales and the
    file gets smaller at tau 0 and 2; both files decode within tau."""
    fitted, plain = default_codecs
    img = np.ascontiguousarray(data.astronaut()[:300, :400])
    for tau in (0, 2):
        a, b = fitted.compress(img, tau), plain.compress(img, tau)
        tiles = Container.from_bytes(a.data).tiles
        assert any(t.kind == LEARNED_V3 and t.scales for t in tiles), tau
        assert a.bpp < b.bpp, (tau, a.bpp, b.bpp)
        for blob in (a.data, b.data):
            out = fitted.decompress(blob).pixels
            assert int(np.abs(out.astype(int) - img.astype(int)).max()) <= tau
