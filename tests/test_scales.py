"""Per-tile log-scale offsets (``nlic.coding.scales``)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from nlic.bitstream.container import (
    KIND_VERSION,
    LEARNED_KINDS,
    LEARNED_V3,
    LEARNED_V4,
    LEARNED_V5,
    LEARNED_V6,
    LEARNED_V7,
    Container,
)
from nlic.coding import scale_fields, scales, search
from nlic.errors import BitstreamError


def test_offsets_pack_and_unpack() -> None:
    assert scale_fields.pack([0, 0, 0]) == b""
    assert scale_fields.unpack(b"", 3) == [0, 0, 0]
    assert scale_fields.unpack(scale_fields.pack([-8, 0, 4]), 3) == [-8, 0, 4]
    with pytest.raises(BitstreamError, match="log-scale offsets"):
        scale_fields.unpack(b"\x01\x02", 3)


def test_offsets_stay_on_the_grid() -> None:
    from nlic.residual.integer import LOG_SCALE_LEVELS

    idx = np.array([[0, 5, LOG_SCALE_LEVELS - 1]])
    assert scales.apply(idx, -8).tolist() == [[0, 0, LOG_SCALE_LEVELS - 9]]
    assert scales.apply(idx, 4).tolist() == [[4, 9, LOG_SCALE_LEVELS - 1]]


@pytest.fixture(scope="module")
def default_codecs():
    from nlic.api import load_codec

    return (load_codec(tile=512, stored_fallback=False).image_codec,
            load_codec(tile=512, stored_fallback=False, fit_scales=False).image_codec,
            load_codec(tile=512, stored_fallback=False, patch_scales=False).image_codec)


@pytest.fixture
def colour_red(default_codecs, monkeypatch):
    """The default codec with every R on the colour heads (no format 8 tiles), a fresh decoder and
    a real photo."""
    from nlic.api import load_codec

    codec = default_codecs[0]
    monkeypatch.setattr(codec, "grey_red", False)
    for tau in (0, 2):  # formats 6 and 7 (format 9 has its own tests)
        monkeypatch.setattr(codec.coder(tau), "fine", False)
    return codec, load_codec(tile=512).image_codec, np.ascontiguousarray(data.astronaut()[:256, :384])


def _red_from_grey(codec, data: bytes) -> list[bool]:
    """Whether each learned tile of a file takes R's mixtures from the grey heads (a format 8 tile,
    or a format 9 tile with the flag)."""
    c = Container.from_bytes(data)
    sizes = [(h, w) for _, _, h, w in codec._tiles(c.height, c.width, c.tile)]
    return [codec._prepare_tile(chunk, h, w, 3, c.tau).stream.grey_red for (h, w), chunk in zip(sizes, c.tiles)
            if chunk.kind in LEARNED_KINDS]


def _coded(codec, fresh, img: np.ndarray, tau: int) -> tuple[int, set[int], int]:
    """``img`` coded by ``codec`` and decoded within ``tau`` by ``fresh``: the file's size, tile
    kinds and version."""
    out = codec.compress(img, tau)
    assert int(np.abs(fresh.decompress(out.data).pixels.astype(int) - img.astype(int)).max()) <= tau
    c = Container.from_bytes(out.data)
    return len(out.data), {t.kind for t in c.tiles}, c.version


def test_the_estimate_the_choice_rests_on_matches_the_real_code(default_codecs) -> None:
    """The encoder's float estimate of a tile's bits under its integer mixtures is within 1 % of the
    residual stream it then writes (the choice is made on the right quantity)."""
    import torch

    codec, *_ = default_codecs
    img = np.ascontiguousarray(data.chelsea()[:256, :256])
    coder = codec.coder(0)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    x_hat = torch.full_like(x, 128.0)
    patches = codec._patches(x_hat, None, 256, 256, 0, 3, coder.head)
    from nlic.residual.patches import patchify

    bins = patchify((x - x_hat).long())
    params = coder.whole_mixtures(bins, patches, 0)
    estimate = sum(
        search._CodeLength(*(t.numpy().reshape(-1, t.shape[-1]) for t in (p.logits, p.means, p.log_scales)),
                           bins[:, c].numpy().reshape(-1), patches.lo[:, c].numpy().reshape(-1),
                           patches.hi[:, c].numpy().reshape(-1), 0)(0)
        for c, p in enumerate(params))
    real = 8 * len(coder.encode(params, bins, patches, 0))
    assert abs(real - estimate) < 0.01 * real, (real, estimate)


def test_offsets_pay_on_a_photo_and_decode_exactly(default_codecs) -> None:
    """On astronaut (a studio photo unlike the training crops) the encoder moves the scales and the
    file gets smaller at tau 0 and 2, per tile (format 3) and more per patch (format 4); every file
    decodes within tau."""
    per_patch, plain, per_tile = default_codecs
    img = np.ascontiguousarray(data.astronaut()[:300, :400])
    for tau in (0, 2):
        a, b, c = per_patch.compress(img, tau), plain.compress(img, tau), per_tile.compress(img, tau)
        tiles = Container.from_bytes(a.data).tiles
        assert any(KIND_VERSION[t.kind] >= 4 for t in tiles)
        assert Container.from_bytes(a.data).version >= 4
        assert all(t.kind == LEARNED_V3 for t in Container.from_bytes(c.data).tiles), tau
        assert any(t.scales for t in Container.from_bytes(c.data).tiles), tau
        assert Container.from_bytes(c.data).version == 3
        assert a.bpp < c.bpp < b.bpp, (tau, a.bpp, c.bpp, b.bpp)
        for blob in (a.data, b.data, c.data):
            out = per_patch.decompress(blob).pixels
            assert int(np.abs(out.astype(int) - img.astype(int)).max()) <= tau


def test_patch_offsets_pack_and_unpack() -> None:
    rng = np.random.default_rng(0)
    for patches, channels in ((64, 3), (5, 3), (7, 1)):
        deltas = rng.integers(scale_fields.DELTA_MIN, scale_fields.DELTA_MAX + 1, (patches, channels))
        tile, sharpness = [-20, 3, 0][:channels], [8, 12, 64][:channels]
        blob = scale_fields.pack_patches(tile, sharpness, deltas)
        assert len(blob) == 2 * channels + (patches * channels + 1) // 2
        offsets, sharp = scale_fields.unpack_patches(blob, patches, channels)
        assert np.array_equal(offsets, scale_fields.patch_offsets(tile, deltas)) and sharp == sharpness
        with pytest.raises(BitstreamError, match="per-patch log-scale offsets"):
            scale_fields.unpack_patches(blob[:-1], patches, channels)
        with pytest.raises(BitstreamError, match="sharpness"):
            scale_fields.unpack_patches(blob[:channels] + bytes(channels) + blob[2 * channels :], patches, channels)


def test_sharpness_multiplies_the_logit_gaps_exactly() -> None:
    """Planning under sharpness 16 (gaps doubled) is planning the table with doubled logits; 8 is
    the plan itself."""
    from nlic.entropy.pmf import plan_group

    rng = np.random.default_rng(3)
    n, K = 2000, 3
    table = np.concatenate([rng.integers(-200, 200, (n, K)), rng.integers(-800, 800, (n, K)),
                            rng.integers(40, 160, (n, K))], axis=1).astype(np.int32)
    lo, hi = np.full(n, -100), np.full(n, 100)
    doubled = table.copy()
    doubled[:, :K] *= 2
    for tau in (0, 2):
        a, b = plan_group(table, tau, lo, hi, 0, 16), plan_group(doubled, tau, lo, hi)
        assert np.array_equal(a.params.weights, b.params.weights) and np.array_equal(a.first, b.first)
        assert np.array_equal(a.windows.masses, b.windows.masses)
        assert np.array_equal(plan_group(table, tau, lo, hi, 0, 8).windows.masses,
                              plan_group(table, tau, lo, hi).windows.masses)
        assert not np.array_equal(a.params.weights, plan_group(table, tau, lo, hi).params.weights)


def _mixtures(n: int, scale_index: int, rng) -> np.ndarray:
    """Integer mixture rows ``[n, 3K]`` (K = 2): equal weights, zero means, one log-scale index."""
    from nlic.residual.integer import LOGIT_STEPS

    return np.concatenate([np.zeros((n, 2), np.int64), np.zeros((n, 2), np.int64) + rng.integers(-3, 4, (n, 1)),
                           np.full((n, 2), scale_index, np.int64)], axis=1) + 0 * LOGIT_STEPS


def test_the_search_finds_each_patch_its_own_offset() -> None:
    """Two patches under the same mixtures, one with residuals twice as spread as the model
    expects, one as expected: the compiled search moves the first's scales up by about log 2 and
    leaves the second's, and its estimate is the reference one (:class:`search._CodeLength`)."""
    from nlic.residual.integer import LOG_SCALE_MIN, LOG_SCALE_STEPS

    rng = np.random.default_rng(1)
    n = 4000
    index = int(round((np.log(2.0) - LOG_SCALE_MIN) * LOG_SCALE_STEPS))  # scale 2
    table = _mixtures(2 * n, index, rng)
    symbols = np.concatenate([np.round(rng.logistic(0, 4.0, n)), np.round(rng.logistic(0, 2.0, n))]).astype(np.int64)
    lo, hi = np.full(2 * n, -255), np.full(2 * n, 255)
    patch = np.repeat([0, 1], n)
    deltas, bits = search.refine([table], [symbols], [lo], [hi], patch, 2, 0, [0])
    moved = deltas[0, 0] * scale_fields.DELTA_STEP / LOG_SCALE_STEPS  # natural-log units
    assert abs(moved - np.log(2.0)) < 0.15, moved
    assert deltas[1, 0] == 0
    reference = sum(search._CodeLength(*np.split(table[patch == p], 3, axis=1), symbols[patch == p],
                                       lo[patch == p], hi[patch == p], 0)(scale_fields.DELTA_STEP * int(deltas[p, 0]))
                    for p in (0, 1))
    assert abs(bits - reference) < 1e-3 * reference, (bits, reference)


def test_the_search_sharpens_mixtures_that_are_too_even() -> None:
    """Symbols drawn from the heavier of two components (a sharp one at 73 %, a blunt one at 27 %):
    the encoder sharpens the mixture and its estimate says that pays; symbols drawn from the
    mixture itself keep it neutral."""
    from nlic.residual.integer import LOG_SCALE_MIN, LOG_SCALE_STEPS, LOGIT_STEPS

    rng = np.random.default_rng(2)
    n = 4000
    index = lambda scale: int(round((np.log(scale) - LOG_SCALE_MIN) * LOG_SCALE_STEPS))  # noqa: E731
    row = [LOGIT_STEPS, 0, 0, 0, index(1.5), index(12.0)]  # logits 1 nat apart, means 0, two scales
    table = np.tile(np.array(row, dtype=np.int32), (n, 1))
    lo, hi = np.full(n, -255), np.full(n, 255)
    sharp_only = np.round(rng.logistic(0, 1.5, n)).astype(np.int64)
    pick = rng.random(n) < 1 / (1 + np.exp(-1.0))
    mixed = np.round(np.where(pick, rng.logistic(0, 1.5, n), rng.logistic(0, 12.0, n))).astype(np.int64)
    chosen = search.choose_sharpness([table, table], [sharp_only, mixed], [lo, lo], [hi, hi], 0, [0, 0])
    assert chosen[0] > 8 and chosen[1] == 8, chosen
    bits = lambda s, sym: search._search_channel(table, sym, lo, hi, np.array([0, n]), 0, 0, 1, 0, 0, 1, s)[1][0]  # noqa: E731
    assert bits(chosen[0], sharp_only) < 0.97 * bits(8, sharp_only)


def test_the_search_reads_reordered_moved_and_shifted_symbols_in_place() -> None:
    """``order``, ``moved_by`` and ``shifted_by`` (what the encoder's searches read in place) give
    the search of the reordered copies under :func:`scales.moved` and :func:`scales.shifted`."""
    rng = np.random.default_rng(5)
    n, K = 3000, 3
    table = np.concatenate([rng.integers(-40, 40, (n, K)), rng.integers(-64, 64, (n, K)),
                            rng.integers(40, 60, (n, K))], axis=1).astype(np.int32)
    groups = rng.integers(0, 7, n)
    symbols = np.round(rng.logistic(0, 0.4 * 1.8 ** groups) / 3).astype(np.int64)  # bins of width 3
    lo, hi = np.full(n, -6), np.full(n, 6)  # some symbols at the ends
    order = np.argsort(groups, kind="stable")
    starts = np.searchsorted(groups[order], np.arange(8))
    moved_by, shifted_by = rng.integers(-20, 20, n), 3 * rng.integers(-30, 30, n)
    moved_by[::20] = rng.choice([-90, 100], n // 20)  # some beyond the grid's ends
    copies = scales.shifted(scales.moved(table, moved_by), shifted_by)[order]
    for step, shift_step in ((1, 0.0), (0, 3 / 16)):
        args = (starts, 1, 2, step, -32, 24, 4, 12, shift_step)
        expected = search._search_channel(copies, symbols[order], lo[order], hi[order], *args)
        found = search._search_channel(table, symbols, lo, hi, *args, order=order, moved_by=moved_by,
                                       shifted_by=shifted_by)
        assert all(np.array_equal(a, b) for a, b in zip(expected, found))
        assert len(set(expected[0].tolist())) > 1  # the groups' choices differ: the test can tell them apart


def test_a_sharpened_tile_without_offsets_keeps_its_sharpness(default_codecs, monkeypatch) -> None:
    """A tile whose offsets are all zero but whose mixtures are sharpened is a format 4 tile (a
    format 2 tile cannot carry the sharpness, and its decode would diverge): it decodes exactly."""
    per_patch = default_codecs[0]
    monkeypatch.setattr(search, "choose", lambda tables, *a, **k: ([0] * len(tables), 0.0))
    monkeypatch.setattr(search, "choose_sharpness", lambda tables, *a, **k: [16] * len(tables))
    monkeypatch.setattr(search, "refine", lambda tables, symbols, lo, hi, patch, patches, *a, **k:
                        (np.zeros((patches, len(tables)), dtype=np.int64), 0.0))
    monkeypatch.setattr(search, "choose_classes", lambda tables, *a, **k:
                        np.zeros((len(tables), scales.SYMBOL_CLASSES), dtype=np.int64))
    monkeypatch.setattr(search, "choose_means", lambda tables, *a, **k:
                        np.zeros((len(tables), scales.MEAN_LEVELS), dtype=np.int64))
    for img in (np.ascontiguousarray(data.camera()[:96, :128]), np.ascontiguousarray(data.chelsea()[:96, :128])):
        out = per_patch.compress(img, 0)
        tiles = Container.from_bytes(out.data).tiles
        assert [t.kind for t in tiles] == [LEARNED_V4], [t.kind for t in tiles]
        assert scale_fields.unpack_patches(tiles[0].scales, 4, img.shape[2] if img.ndim == 3 else 1)[1][0] == 16
        assert np.array_equal(per_patch.decompress(out.data).pixels.reshape(img.shape), img)


def test_class_offsets_pack_unpack_and_corrupt_fields() -> None:
    """Format 5's scales field: the format 4 field and a signed byte per channel and activity
    class; a field cut or lengthened is refused."""
    rng = np.random.default_rng(3)
    deltas = rng.integers(scale_fields.DELTA_MIN, scale_fields.DELTA_MAX + 1, size=(5, 3))
    classes = rng.integers(search.CLASS_LOWEST, search.CLASS_HIGHEST + 1, size=(3, scales.SYMBOL_CLASSES))
    choice = scale_fields.ScaleChoice([-3, 0, 7], deltas, [8, 12, 6], classes)
    field = choice.pack()
    per_patch, sharpness, back, means = scale_fields.unpack_classes(field, 5, 3)
    assert np.array_equal(per_patch, choice.per_patch(5)) and sharpness == [8, 12, 6]
    assert np.array_equal(back, classes) and means is None
    for bad in (field[:-1], field + b"\x00", field[: 3 * scales.SYMBOL_CLASSES - 1]):
        with pytest.raises(BitstreamError, match="do not match"):
            scale_fields.unpack_classes(bad, 5, 3)


def test_surprise_and_mean_levels_follow_their_definitions() -> None:
    """The previous channel's surprise level: how many SURPRISE_LIMITS (half bins) lie below the
    distance of its bin from its heaviest component's mean; the mean level (format 6): as many of
    MEAN_LIMITS (format 9: FINE_MEAN_LIMITS) on the side of the mean the bin fell, the middle level
    within half a bin of it; integers on both sides."""
    rng = np.random.default_rng(5)
    K, n = 3, 4000
    for tau in (0, 2):
        w = 2 * tau + 1
        table = np.concatenate([rng.integers(-40, 40, (n, K)), rng.integers(-800, 800, (n, K)),
                                rng.integers(0, 100, (n, K))], 1).astype(np.int32)
        bins = rng.integers(-40, 40, n)
        top = table[:, :K].argmax(1)
        assert np.array_equal(scales.heaviest_means(table), table[np.arange(n), K + top])
        signed = (bins * w - table[np.arange(n), K + top] / 16.0) / w  # bins
        want = (np.abs(signed)[:, None] > np.asarray(scales.SURPRISE_LIMITS)[None, :] / 2).sum(1)
        got = scales.surprise_levels(table, bins, w)
        assert np.array_equal(got, want), tau
        assert len(np.unique(got)) == scales.SURPRISE_LEVELS
        middle = len(scales.FINE_MEAN_LIMITS)  # (formats 6 to 8: their levels are the middle ones)
        for fine, limits in ((False, scales.MEAN_LIMITS), (True, scales.FINE_MEAN_LIMITS)):
            level = (np.abs(signed)[:, None] > np.asarray(limits)[None, :] / 2).sum(1)
            want = middle + np.sign(signed).astype(int) * level
            got = scales.surprise_levels(table, bins, w, signed=True, fine=fine)
            assert np.array_equal(got, want), (tau, fine)
            assert len(np.unique(got)) == 2 * len(limits) + 1


def test_the_decoder_finds_each_symbol_in_the_encoders_activity_class(default_codecs) -> None:
    """The classes and median predictions the decoder derives from its gathered neighbours,
    wavefront by wavefront, are the encoder's, computed on the whole patches (zero outside each
    patch), at tau 0 and 2."""
    import torch

    from nlic.coding.residual import _ResidualBuffer
    from nlic.residual.patches import patchify
    from nlic.residual.quantizer import bin_width, quantize_residual

    codec = default_codecs[0]
    img = torch.from_numpy(np.ascontiguousarray(data.astronaut()[:128, :128])).permute(2, 0, 1)[None].float()
    for tau in (0, 2):
        coder = codec.coder(tau)
        w = bin_width(tau)
        bins = patchify(torch.div(quantize_residual(img - 128, tau), w, rounding_mode="floor").long())
        context = (bins * w).numpy()
        expected = scales.activity_levels(context, w)  # [P, 3, S, S]
        assert len(np.unique(expected)) == len(scales.ACTIVITY_LIMITS) + 1  # every level occurs: a real check
        expected_predictions = scales.context_predictions(context)  # (the predictor sources, chroma last)
        assert all(len(np.unique(p[:, 1:])) > 20 for p in expected_predictions)
        P = bins.shape[0]
        order, ends = coder._decode_order(torch.ones(P, 64, 64, dtype=torch.bool))
        buffer = _ResidualBuffer.of(order, P, coder.halo, coder.offsets)
        values = context.transpose(0, 2, 3, 1).reshape(-1, 3).astype(np.float32)
        start = 0
        for end in ends:
            taps = buffer.gather(start, end)
            found = scales.gathered_levels(taps, coder.activity_taps, 3, w)
            want = expected.transpose(0, 2, 3, 1).reshape(-1, 3)[order[start:end]]
            assert np.array_equal(found, want), (tau, start)
            red = values[order[start:end], 0]  # the wavefront's R, decoded before its G and B
            gathered = [*scales.gathered_predictions(taps, coder.activity_taps, 3),
                        scales.gathered_chroma(taps, coder.activity_taps, 3, red)]
            for found_p, want_p in zip(gathered, expected_predictions, strict=True):
                assert np.array_equal(found_p, want_p.transpose(0, 2, 3, 1).reshape(-1, 3)[order[start:end]])
            activity, predictions = scales.gathered_context(taps, coder.activity_taps, 3, w)  # the compiled form
            assert np.array_equal(activity, found)
            scales.add_red(predictions, red)
            assert np.array_equal(predictions, np.stack(gathered))
            buffer.scatter(start, np.ascontiguousarray(values[order[start:end]]), 3)
            start = end


def test_activity_class_offsets_pay_and_decode_exactly(default_codecs, monkeypatch) -> None:
    """On a smooth photo (gradients and flat patches) the class offsets make the file smaller at
    tau 0 and 2 than the same choice without them, and every file decodes within tau (format 5:
    no mean offsets)."""
    codec = default_codecs[0]
    monkeypatch.setattr(codec, "grey_red", False)  # (R from the colour heads: no format 8)
    for tau in (0, 2):
        monkeypatch.setattr(codec.coder(tau), "mean_offsets", False)
    img = np.ascontiguousarray(data.astronaut()[:256, :384])
    sizes = {}
    for with_classes in (True, False):
        if not with_classes:
            monkeypatch.setattr(search, "choose_classes", lambda tables, *a, **k:
                                np.zeros((len(tables), scales.SYMBOL_CLASSES), dtype=np.int64))
        for tau in (0, 2):
            out = codec.compress(img, tau)
            kinds = {t.kind for t in Container.from_bytes(out.data).tiles}
            assert (LEARNED_V5 in kinds) == with_classes, (tau, kinds)
            assert int(np.abs(codec.decompress(out.data).pixels.astype(int) - img.astype(int)).max()) <= tau
            sizes[with_classes, tau] = len(out.data)
    for tau in (0, 2):
        assert sizes[True, tau] < sizes[False, tau], sizes


def test_mean_offsets_pack_unpack_and_corrupt_fields() -> None:
    """Format 6's scales field: format 5's, then per channel and source (the channels before it and
    its median and average deviations) a mask of the mean levels with an offset and a signed byte
    each; format 7's the same with the chroma source after those; a field cut or lengthened, or one
    with offsets from a channel that is not before the one they move, is refused."""
    rng = np.random.default_rng(4)
    deltas = rng.integers(scale_fields.DELTA_MIN, scale_fields.DELTA_MAX + 1, size=(5, 3))
    chroma_source = scales.CHROMA_SOURCE
    for chroma in (False, True):
        means = np.zeros((3, scales.MEAN_SOURCES, scales.MEAN_LEVELS), dtype=np.int64)
        middle = slice(2, 2 + scales.OLD_MEAN_LEVELS)  # (formats 6 to 8 have the middle levels)
        means[:, : scales.LS_SOURCE, middle] = rng.integers(search.MEAN_LOWEST, search.MEAN_HIGHEST + 1,
                                                             size=(3, scales.LS_SOURCE, scales.OLD_MEAN_LEVELS))
        means[0, : scales.CHANNEL_SOURCES] = 0  # R has no channel before it, G one
        means[1, 1 : scales.CHANNEL_SOURCES] = 0
        means[2, 0, 3] = 0  # a level without an offset
        means[0 if chroma else slice(None), chroma_source] = 0  # (R has no chroma source; format 6 none)
        for classes in (None, rng.integers(-5, 5, size=(3, scales.SYMBOL_CLASSES))):
            choice = scale_fields.ScaleChoice([1, 0, -2], deltas, [8, 8, 16], classes, means)
            assert choice.chroma == chroma
            field = choice.pack()
            per_patch, sharpness, back, got = scale_fields.unpack_classes(field, 5, 3, means=True, chroma=chroma)
            assert np.array_equal(per_patch, choice.per_patch(5)) and sharpness == [8, 8, 16]
            assert np.array_equal(back, np.zeros_like(back) if classes is None else classes)
            assert np.array_equal(got, means)
            for bad in (field[:-1], field + b"\x00"):
                with pytest.raises(BitstreamError, match="do not match"):
                    scale_fields.unpack_classes(bad, 5, 3, means=True, chroma=chroma)
        for c, j in ((0, 0), (0, 1), (1, 1)):
            wrong = means.copy()
            wrong[c, j, 2] = 3
            with pytest.raises(BitstreamError, match="not before"):
                field = scale_fields.ScaleChoice([1, 0, -2], deltas, [8, 8, 16], None, wrong).pack()
                scale_fields.unpack_classes(field, 5, 3, means=True, chroma=chroma)


def test_format_9_fields_pack_unpack_and_corrupt_fields() -> None:
    """Format 9's scales field: format 5's, the mean offsets of all six sources at the eleven finer
    levels, a flags byte (grey heads for R) and the least-squares coefficients of the channels
    whose source has offsets; a field cut or lengthened, coefficients without offsets (or offsets
    without coefficients), an unknown flag or grey heads for a grey tile are refused."""
    from nlic.coding import least_squares

    rng = np.random.default_rng(8)
    deltas = rng.integers(scale_fields.DELTA_MIN, scale_fields.DELTA_MAX + 1, size=(5, 3))
    means = rng.integers(search.MEAN_LOWEST, search.MEAN_HIGHEST + 1, size=(3, scales.MEAN_SOURCES, scales.MEAN_LEVELS))
    means[0, : scales.CHANNEL_SOURCES] = means[1, 1 : scales.CHANNEL_SOURCES] = means[0, scales.CHROMA_SOURCE] = 0
    means[1, list(scales.LS_SOURCES)] = 0  # G without the least-squares sources: its coefficients are not stored
    coefficients = rng.integers(-3000, 3000, size=(3, least_squares.MOST_TERMS))
    for c in range(3):
        coefficients[c, least_squares.terms(c):] = 0
    for grey_red in (False, True):
        choice = scale_fields.ScaleChoice([1, 0, -2], deltas, [8, 8, 16], None, means, fine=True,
                                          least_squares=coefficients)
        field = choice.pack(grey_red=grey_red)
        got = scale_fields.unpack_fine(field, 5, 3)
        assert np.array_equal(got.per_patch, choice.per_patch(5)) and got.sharpness == [8, 8, 16]
        assert not got.classes.any() and np.array_equal(got.means, means) and got.grey_red == grey_red
        assert np.array_equal(got.least_squares[[0, 2]], coefficients[[0, 2]]) and not got.least_squares[1].any()
        for bad in (field[:-1], field + b"\x00", field[:-20]):
            with pytest.raises(BitstreamError, match="do not match"):
                scale_fields.unpack_fine(bad, 5, 3)
    field = scale_fields.ScaleChoice([1, 0, -2], deltas, [8, 8, 16], None, means, fine=True,
                                     least_squares=coefficients).pack()
    at = len(field) - 1 - 2 * (least_squares.terms(0) + least_squares.terms(2)) - 1  # the flags byte
    for flags in (b"\x02", b"\x81"):
        with pytest.raises(BitstreamError, match="flags"):
            scale_fields.unpack_fine(field[:at] + flags + field[at + 1 :], 5, 3)
    mask_only_red = field[: at + 1] + b"\x01" + field[at + 2 : at + 2 + 2 * least_squares.terms(0)]
    with pytest.raises(BitstreamError, match="least-squares"):
        scale_fields.unpack_fine(mask_only_red, 5, 3)
    grey = scale_fields.ScaleChoice([1], deltas[:, :1], [8], None, means[:1], fine=True, least_squares=coefficients[:1])
    with pytest.raises(BitstreamError, match="flags"):
        scale_fields.unpack_fine(grey.pack(grey_red=True), 5, 1)
    assert scale_fields.unpack_fine(grey.pack(), 5, 1).least_squares[0, : least_squares.terms(0)].tolist() == \
        coefficients[0, : least_squares.terms(0)].tolist()


def test_mean_shift_adds_each_sources_offset_and_shifted_moves_the_means() -> None:
    K, n = 3, 40
    rng = np.random.default_rng(7)
    table = np.arange(n * 3 * K, dtype=np.int32).reshape(n, 3 * K)
    levels = [rng.integers(0, scales.MEAN_LEVELS, n) for _ in range(scales.MEAN_SOURCES)]
    offsets = rng.integers(-9, 9, (scales.MEAN_SOURCES, scales.MEAN_LEVELS))
    shift = scales.mean_shift(levels, offsets, 5)
    assert np.array_equal(shift, 5 * sum(offsets[j][levels[j]] for j in range(scales.MEAN_SOURCES)))
    assert np.array_equal(scales.mean_shift(levels[:1], offsets, 3), 3 * offsets[0][levels[0]])
    assert scales.mean_shift([], offsets, 5) is None and scales.mean_shift(levels, 0 * offsets, 5) is None
    out = scales.shifted(table, shift)
    assert out.dtype == table.dtype
    assert np.array_equal(out[:, K : 2 * K] - table[:, K : 2 * K], np.repeat(shift[:, None], K, 1))
    assert np.array_equal(np.delete(out, np.s_[K : 2 * K], 1), np.delete(table, np.s_[K : 2 * K], 1))
    assert scales.shifted(table, None) is table


def test_a_second_sweep_frees_what_an_earlier_source_took_from_a_later_one(monkeypatch) -> None:
    """Two overlapping sources: the symbols' means are off by a lead only the second source tells
    exactly, the first one partly.  Searched once, the first source takes part of the lead and the
    second cannot undo it; a second sweep re-searches each under the other's offsets and the
    estimate falls (the real code follows it: the search's estimate is the code length)."""
    rng = np.random.default_rng(11)
    n, tau, scale_index = 6000, 0, 40
    table = _mixtures(n, scale_index, rng)
    middle = (scales.MEAN_LEVELS - scales.OLD_MEAN_LEVELS) // 2  # (format 6's seven levels)
    second = middle + rng.integers(0, scales.OLD_MEAN_LEVELS, n)
    first = np.where(rng.random(n) < 0.6, second, middle + rng.integers(0, scales.OLD_MEAN_LEVELS, n))  # agrees 60 %
    lead = (second - scales.MEAN_LEVELS // 2) * 2  # pixels
    symbols = np.round(lead + rng.logistic(0, 0.6, n)).astype(np.int64)
    lo, hi = np.full(n, -255), np.full(n, 255)
    levels = [[None, None, first, second, None]]
    base = [np.zeros(n, dtype=np.int64)]

    def bits(offsets: np.ndarray) -> float:
        moved = scales.shifted(table, scales.mean_shift(levels[0], offsets[0], 1))
        K = table.shape[1] // 3
        return search._CodeLength(moved[:, :K], moved[:, K : 2 * K], moved[:, 2 * K :], symbols, lo, hi, tau)(0)

    found = {}
    for sweeps in (1, 2):
        monkeypatch.setattr(search, "MEAN_SWEEPS", sweeps)
        found[sweeps] = search.choose_means([table], [symbols], [lo], [hi], levels, base, tau)
    assert found[1][0, 2].any() and not np.array_equal(found[1], found[2])
    assert bits(found[2]) < 0.99 * bits(found[1]) < 0.99 * bits(0 * found[1])


def test_the_decoders_compiled_adjustments_follow_the_definitions() -> None:
    """:func:`scales.symbol_adjustments` (the decoder's one pass per channel and wavefront) gives
    each symbol the log-scale offset of its tile's class offsets and the mean shift of its tile's
    mean offsets that :func:`symbol_classes`, :func:`distance_levels`, :func:`deviation` and
    :func:`mean_shift` define, for every channel, with tiles with and without offsets mixed, and
    format 9 tiles (finer levels, the least-squares source) beside format 6 ones."""
    from nlic.coding import least_squares

    rng = np.random.default_rng(11)
    K, n, T = 3, 3000, 3
    for tau in (0, 2):
        w = 2 * tau + 1
        table = np.concatenate([rng.integers(-40, 40, (n, K)), rng.integers(-900, 900, (n, K)),
                                rng.integers(0, 100, (n, K))], 1).astype(np.int32)
        tile = np.sort(rng.integers(0, T, n))
        base = rng.integers(-20, 20, n)
        activity = rng.integers(0, len(scales.ACTIVITY_LIMITS) + 1, (n, 3))
        predictions = rng.integers(-60, 60, (len(scales.PREDICTORS) + 1, n, 3))  # (the chroma plane last)
        distances = [rng.integers(-900, 900, n) for _ in range(2)]
        class_offsets = rng.integers(-9, 9, (T, scales.SYMBOL_CLASSES))
        mean_offsets = rng.integers(-9, 9, (T, scales.MEAN_SOURCES, scales.MEAN_LEVELS))
        class_offsets[1] = mean_offsets[1] = 0  # a tile without offsets
        fine = np.array([True, False, False])  # format 9's finer levels and least-squares source, format 6's
        mean_offsets[2, scales.LS_SOURCE :] = 0  # (a format 6 tile has none of format 9's sources)
        sums = rng.integers(-60 * 2**least_squares.FRACTION_BITS, 60 * 2**least_squares.FRACTION_BITS, (n, 3))
        feedbacks = rng.integers(-3000, 3000, (2, n, 3))
        for c in range(3):
            offset, shift, heaviest = scales.symbol_adjustments(table, c, base, tile, activity, distances,
                                                                predictions, class_offsets, mean_offsets, w,
                                                                scales.tile_mean_limits(fine, w), sums, feedbacks)
            assert np.array_equal(heaviest, scales.heaviest_means(table))
            classes = scales.symbol_classes(activity[:, c], None, w, distances[c - 1] if c else None)
            assert np.array_equal(offset, base + class_offsets[tile, classes]), (tau, c)
            for t in range(T):
                levels = ([scales.distance_levels(distances[c - 1 - j], w, True, fine[t]) if c > j else None
                           for j in range(scales.CHANNEL_SOURCES)]
                          + [scales.distance_levels(scales.deviation(table, p[:, c], w), w, True, fine[t])
                             if c or k != scales.CHROMA else None for k, p in enumerate(predictions)]
                          + [scales.distance_levels(2 * (heaviest - (sums[:, c] >> least_squares.SHIFT)), w, True,
                                                    fine[t])]
                          + [scales.distance_levels(f[:, c], w, True, fine[t]) for f in feedbacks])
                rows = tile == t
                want = scales.mean_shift([None if lev is None else lev[rows] for lev in levels], mean_offsets[t], w)
                assert np.array_equal(shift[rows], np.zeros(rows.sum()) if want is None else want), (tau, c, t)
            assert len(np.unique(shift)) > 10
            for sources in ((None, feedbacks), (sums, None)):  # (the test sees each source)
                _, without, _ = scales.symbol_adjustments(table, c, base, tile, activity, distances, predictions,
                                                          class_offsets, mean_offsets, w,
                                                          scales.tile_mean_limits(fine, w), *sources)
                assert not np.array_equal(without[tile == 0], shift[tile == 0])
            plain, none, _ = scales.symbol_adjustments(table, c, base, tile, None, distances, None, class_offsets,
                                                       mean_offsets, w)
            assert np.array_equal(plain, base) and none is None


def test_mean_offsets_pay_and_decode_exactly(colour_red, monkeypatch) -> None:
    """On a real photo the mean offsets (format 6) make the file smaller at tau 0 and 2 than the
    same choices without them, and every file decodes within tau by a fresh codec."""
    codec, fresh, img = colour_red
    sizes = {}
    for with_means in (True, False):
        for tau in (0, 2):
            monkeypatch.setattr(codec.coder(tau), "mean_offsets", with_means)
            monkeypatch.setattr(codec.coder(tau), "chroma_source", False)
            sizes[with_means, tau], kinds, version = _coded(codec, fresh, img, tau)
            assert (LEARNED_V6 in kinds) == with_means and version == (6 if with_means else 5), (tau, kinds)
    for tau in (0, 2):
        assert sizes[True, tau] < sizes[False, tau], sizes


def test_the_predictors_follow_their_definitions() -> None:
    """MED (LOCO-I's median predictor) and the average of W and N, rounded down (format 6)."""
    w, n, nw = np.array([5, 5, 5, 9, 0]), np.array([9, 9, 9, 5, 0]), np.array([10, 2, 7, 7, 0])
    assert scales.median_predictions(w, n, nw).tolist() == [5, 9, 7, 7, 0]
    average = scales.average_predictions(np.array([3, -3, -4, 0]), np.array([4, 0, 1, -1]), None)
    assert average.tolist() == [3, -2, -2, -1]
    context = np.arange(2 * 1 * 4 * 4).reshape(2, 1, 4, 4)
    med = scales.context_predictions(context)[0]
    assert med[0, 0, 0, 0] == 0 and med[0, 0, 0, 2] == 1  # (W, N, NW = 0, 0, 0 and 1, 0, 0 in the first row)
    west, north, north_west = (np.array([context[1, 0, i, j]]) for i, j in ((2, 1), (1, 2), (1, 1)))
    assert med[1, 0, 2, 2] == scales.median_predictions(west, north, north_west)[0]
    # the compiled form is each predictor on the shifted planes (zero outside each patch)
    r = np.random.default_rng(3).integers(-300, 300, (5, 3, 16, 16))
    shift = [np.zeros_like(r) for _ in range(3)]
    shift[0][..., :, 1:], shift[1][..., 1:, :], shift[2][..., 1:, 1:] = r[..., :, :-1], r[..., :-1, :], r[..., :-1, :-1]
    *got, chroma = scales.context_predictions(r)
    for found, predict in zip(got, scales.PREDICTORS, strict=True):
        assert np.array_equal(found, predict(*shift))
    assert np.array_equal(chroma, scales.chroma_predictions(r))


def test_the_chroma_prediction_follows_its_definition() -> None:
    """Format 7's chroma prediction of G and B: the pixel's R plus MED of the channel's difference
    from R over W, N and NW (zero outside the patch); none (zero) for R."""
    r = np.zeros((1, 3, 3, 3), dtype=np.int64)
    r[0, 0] = [[10, 12, 0], [11, 20, 0], [0, 0, 0]]  # R
    r[0, 1] = [[13, 14, 0], [15, 30, 0], [0, 0, 0]]  # G: G - R = 3, 2 / 4, . around (1, 1)
    r[0, 2] = [[9, 8, 0], [5, 18, 0], [0, 0, 0]]  # B: B - R = -1, -4 / -6, .
    chroma = scales.chroma_predictions(r)
    assert not chroma[:, 0].any()
    # at (1, 1): W, N, NW differences 4, 2, 3 -> MED = 4 + 2 - 3 = 3; R = 20
    assert chroma[0, 1, 1, 1] == 20 + 3
    # B: W, N, NW differences -6, -4, -1 -> NW above both: min = -6
    assert chroma[0, 2, 1, 1] == 20 - 6
    # the first pixel has no neighbours: R itself
    assert chroma[0, 1, 0, 0] == 10 and chroma[0, 2, 0, 0] == 10


def test_the_chroma_source_pays_and_format_6_files_still_decode(colour_red, monkeypatch) -> None:
    """On a real photo the chroma source (format 7) makes the file smaller at tau 0 than format 6
    (the same choices without it); both files decode within tau by a fresh codec, and tiles that
    give the chroma source no offset stay format 6 tiles."""
    codec, fresh, img = colour_red
    sizes = {}
    for chroma in (True, False):
        for tau in (0, 2):
            monkeypatch.setattr(codec.coder(tau), "chroma_source", chroma)
            sizes[chroma, tau], kinds, version = _coded(codec, fresh, img, tau)
            assert LEARNED_V5 not in kinds and (LEARNED_V7 in kinds) <= chroma, (tau, kinds)
            assert version == (7 if LEARNED_V7 in kinds else 6)
    assert sizes[True, 0] < sizes[False, 0], sizes
    assert sizes[True, 2] <= sizes[False, 2] * 1.003, sizes  # (at tau 2 the source moves little either way)


def test_chroma_offsets_for_red_are_refused() -> None:
    """A format 7 tile whose first channel carries chroma mean offsets is corrupt: the encoder never
    writes one (R has no chroma prediction)."""
    channels, patches = 3, 4
    means = np.zeros((channels, scales.MEAN_SOURCES, scales.MEAN_LEVELS), dtype=np.int64)
    means[1, scales.CHROMA_SOURCE, 2] = 5
    choice = scale_fields.ScaleChoice([0, 0, 0], np.zeros((patches, channels), dtype=np.int64), [8, 8, 8], None, means)
    assert choice.chroma
    *_, found = scale_fields.unpack_classes(choice.pack(), patches, channels, means=True, chroma=True)
    assert np.array_equal(found, means)
    means[0, scales.CHROMA_SOURCE, 3] = -2
    with pytest.raises(BitstreamError, match="chroma"):
        scale_fields.unpack_classes(choice.pack(), patches, channels, means=True, chroma=True)
    # a format 6 field (no chroma offsets) reads back with the chroma source zero
    means[:, scales.CHROMA_SOURCE] = 0
    six = scale_fields.ScaleChoice([0, 0, 0], np.zeros((patches, channels), dtype=np.int64), [8, 8, 8], None, means)
    assert not six.chroma
    *_, found = scale_fields.unpack_classes(six.pack(), patches, channels, means=True)
    assert np.array_equal(found, means)


def test_grey_heads_code_red_where_they_pay_and_decode_exactly(default_codecs, monkeypatch) -> None:
    """Formats 8 and 9: on astronaut's lower half the grey heads' R (from the R plane alone) beats
    the colour heads' and the file gets smaller at tau 0 and 2; on a stained micrograph they do not, and its
    tiles keep R on the colour heads; every file decodes within tau by a fresh codec, also with
    tiles of both kinds decoded in lockstep."""
    from nlic.api import load_codec
    from nlic.coding.image import ImageCodec

    codec = default_codecs[0]
    fresh = load_codec(tile=512).image_codec
    fresh.threads = 1  # every learned tile of a file in one lockstep group
    # (astronaut's lower half: on its top the stage-18 colour heads came within the 1 % margin at tau 2)
    for name, rows, pays in (("astronaut", slice(256, None), True), ("immunohistochemistry", slice(None, 256), False)):
        img = np.ascontiguousarray(getattr(data, name)()[rows, :384])
        for tau in (0, 2):
            sizes = {}
            for grey_red in (True, False):
                monkeypatch.setattr(codec, "grey_red", grey_red)
                sizes[grey_red], kinds, _ = _coded(codec, fresh, img, tau)
                out = codec.compress(img, tau).data
                assert any(_red_from_grey(fresh, out)) == (grey_red and pays), (name, tau, kinds)
            assert (sizes[True] < sizes[False]) if pays else (sizes[True] == sizes[False]), (name, tau, sizes)
    # tiles of both kinds in one file, decoded together
    monkeypatch.setattr(codec, "grey_red", True)
    choose = ImageCodec._grey_red
    calls = iter(range(100))
    monkeypatch.setattr(ImageCodec, "_grey_red", lambda self, *a: choose(self, *a) if next(calls) % 2 else None)
    img = np.ascontiguousarray(data.astronaut()[:300, :300])
    for tau in (0, 2):
        codec.tile = 128
        try:
            out = codec.compress(img, tau)
        finally:
            codec.tile = 512
        red = _red_from_grey(fresh, out.data)
        assert any(red) and not all(red), red
        assert int(np.abs(fresh.decompress(out.data).pixels.astype(int) - img.astype(int)).max()) <= tau


def test_cli_colour_red_keeps_r_on_the_colour_heads(tmp_path) -> None:
    """``nlic compress --colour-red`` writes no tile with R from the grey heads; without it the grey
    heads code astronaut's R and the file is smaller; both decode exactly."""
    from PIL import Image

    from nlic.api import load_codec
    from nlic.cli.main import main

    img = np.ascontiguousarray(data.astronaut()[:256, :384])
    Image.fromarray(img).save(tmp_path / "a.png")
    sizes = {}
    for flag in ([], ["--colour-red"]):
        out = tmp_path / f"a{len(flag)}.nlic"
        # (no JPEG XL: at tau 0 it would store this crop whole, and the learned code is the study)
        assert main(["compress", str(tmp_path / "a.png"), str(out), "--tau", "0", "--no-jxl-tiles", *flag]) == 0
        red = _red_from_grey(load_codec().image_codec, out.read_bytes())
        assert any(red) == (not flag), red
        assert main(["decompress", str(out), str(tmp_path / f"b{len(flag)}.png")]) == 0
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"b{len(flag)}.png")), img)
        sizes[bool(flag)] = out.stat().st_size
    assert sizes[False] < sizes[True], sizes
