"""Format 9's least-squares mean source: the fit, the encoder's prediction, the decoder's
wavefront form, and what it does to real files."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from nlic.bitstream.container import LEARNED_V8, LEARNED_V9, Container
from nlic.coding import least_squares

S = 16
#: a 7x7 causal context as the default model's (row -1 stops at NE, as its wavefront mask does)
OFFSETS = ([(dy, dx) for dy in (-3, -2) for dx in range(-3, 4)] + [(-1, dx) for dx in range(-3, 2)]
           + [(0, dx) for dx in (-3, -2, -1)])


def _smooth_patches(rng, patches: int = 6) -> np.ndarray:
    """Residual patches ``[P, 3, S, S]`` whose channels follow each other (G ~ R, B ~ G) over a
    smooth random field: what a per-tile fit finds."""
    base = np.cumsum(np.cumsum(rng.integers(-2, 3, (patches, S, S)), 1), 2) // 4
    r = base + rng.integers(-1, 2, base.shape)
    g = r + 3 + rng.integers(-1, 2, base.shape)
    b = g - 2 + rng.integers(-1, 2, base.shape)
    return np.stack([r, g, b], 1).astype(np.int64)


def _reference(context: np.ndarray, row: np.ndarray, c: int) -> np.ndarray:
    """The prediction pixel by pixel: the channel's own taps, each earlier channel's value and
    cross taps, the bias; floor to 1/MEAN_STEPS pixel."""
    P = context.shape[0]
    out = np.zeros((P, S, S), dtype=np.int64)

    def at(p, q, i, j):
        return int(context[p, q, i, j]) if 0 <= i < S and 0 <= j < S else 0

    for p in range(P):
        for i in range(S):
            for j in range(S):
                total, k = 0, 0
                for dy, dx in least_squares.OWN_TAPS:
                    total += int(row[k]) * at(p, c, i + dy, j + dx)
                    k += 1
                for q in range(c):
                    total += int(row[k]) * at(p, q, i, j)
                    k += 1
                    for dy, dx in least_squares.CROSS_TAPS:
                        total += int(row[k]) * at(p, q, i + dy, j + dx)
                        k += 1
                out[p, i, j] = (total + int(row[k])) // 2**least_squares.SHIFT
    return out


def test_the_fit_finds_a_tiles_predictor_and_the_prediction_follows_its_definition() -> None:
    """The fit's predictor beats the W-N average on a smooth tile whose channels follow each other
    (G's and B's by far: they read the earlier channels' values), its coefficients are integers within int16 and
    zero beyond each channel's terms, and the encoder's prediction is the pixel-by-pixel sum."""
    rng = np.random.default_rng(0)
    context = _smooth_patches(rng)
    valid = np.ones((context.shape[0], S, S), dtype=bool)
    valid[-1, 8:] = False  # (a partial patch: its invalid pixels are not fitted)
    coefficients = least_squares.fit(context, valid)
    assert coefficients.shape == (3, least_squares.MOST_TERMS)
    assert np.abs(coefficients).max() <= least_squares.COEFFICIENT_LIMIT
    for c in range(3):
        assert not coefficients[c, least_squares.terms(c):].any()
        predicted = least_squares.predict(context, coefficients[c], c)
        assert np.array_equal(predicted, _reference(context, coefficients[c], c)), c
        # squared error against the average of W and N, a predictor of the fitted family (the
        # least-squares one is its best but for the coefficients' rounding)
        error = np.square(predicted / 16 - context[:, c])[:, 2:, 2:][valid[:, 2:, 2:]].mean()
        west, north = context[:, c, 2:, 1:-1], context[:, c, 1:-1, 2:]
        average = np.square((west + north) / 2 - context[:, c, 2:, 2:])[valid[:, 2:, 2:]].mean()
        assert error < (0.5 if c else 1.0) * average, (c, error, average)


def test_the_compiled_fit_is_numpys_reweighted_least_squares() -> None:
    """The compiled normal equations and Cholesky solve give NumPy's (BLAS and LAPACK) weights on
    a noisy, outlier-laden system of the fit's size, reweighting steps included."""
    rng = np.random.default_rng(3)
    x = np.c_[rng.normal(size=(4096, least_squares.MOST_TERMS - 1)) * 20, np.ones(4096)]
    y = x @ rng.normal(size=x.shape[1]) + rng.laplace(size=4096) * 3
    y[::97] += 200.0  # edges: what the reweighting is for
    rows = np.ones(len(y))
    for _ in range(1 + least_squares.ROBUST_STEPS):
        normal = (x * rows[:, None]).T @ x
        normal += least_squares.RIDGE * max(np.trace(normal) / len(normal), 1.0) * np.eye(len(normal))
        expected = np.linalg.solve(normal, (x * rows[:, None]).T @ y)
        rows = 1.0 / np.maximum(np.abs(y - x @ expected), least_squares.ROBUST_FLOOR)
    got = least_squares._robust_fit(x, y, least_squares.ROBUST_STEPS, least_squares.RIDGE,
                                    least_squares.ROBUST_FLOOR)
    assert np.allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert np.abs(got - np.linalg.lstsq(x, y, rcond=None)[0]).max() > 1e-3  # (the reweighting moved it)


def test_a_flat_tile_fits_without_a_singular_system() -> None:
    context = np.full((2, 3, S, S), 7, dtype=np.int64)
    coefficients = least_squares.fit(context, np.ones((2, S, S), dtype=bool))
    for c in range(3):
        inner = least_squares.predict(context, coefficients[c], c)[:, 3:, 3:]
        assert np.abs(inner - 7 * 16).max() <= 1, c


def test_the_decoders_wavefront_sums_are_the_encoders_prediction() -> None:
    """:func:`least_squares.gathered` on rows of gathered taps ((tap, rgb) order, zero outside the
    patch) with :func:`add_current` after each channel, for tiles with their own coefficients
    (one without any), shifted down: the encoder's :func:`least_squares.predict`."""
    rng = np.random.default_rng(1)
    context = _smooth_patches(rng, 4)
    P = context.shape[0]
    tile_of_patch = np.array([0, 0, 1, 2])
    coefficients = np.stack([least_squares.fit(context[:2], np.ones((2, S, S), bool)),
                             rng.integers(-400, 400, (3, least_squares.MOST_TERMS)),
                             np.zeros((3, least_squares.MOST_TERMS), dtype=np.int64)])
    for c in range(3):
        coefficients[1, c, least_squares.terms(c):] = 0
    padded = np.pad(context, ((0, 0), (0, 0), (3, 3), (3, 3)))
    p, i, j = (a.reshape(-1) for a in np.meshgrid(np.arange(P), np.arange(S), np.arange(S), indexing="ij"))
    taps = np.stack([padded[p, ch, i + 3 + dy, j + 3 + dx] for dy, dx in OFFSETS for ch in range(3)], 1)
    tile = tile_of_patch[p]
    index = least_squares.tap_index(OFFSETS)
    sums = least_squares.gathered(taps.astype(np.float32), index, coefficients, tile, 3)
    for c in range(3):
        want = np.concatenate([least_squares.predict(context[q : q + 1], coefficients[tile_of_patch[q], c], c)
                               for q in range(P)]).reshape(-1)
        assert np.array_equal(sums[:, c] >> least_squares.SHIFT, want), c
        least_squares.add_current(sums, coefficients, tile, c, context[p, c, i, j])
    assert least_squares.tap_index(OFFSETS[:-1]) is None  # (a mask without W: no source)


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_the_least_squares_source_pays_and_format_8_files_still_decode(name, monkeypatch) -> None:
    """On real photos format 9 (finer mean levels, the least-squares source) makes files smaller at
    tau 0 than format 8 (the same codec without it) and no larger at tau 2; both decode within tau
    by a fresh codec, format 8's as before."""
    from nlic.api import load_codec

    codec = load_codec(tile=512, stored_fallback=False).image_codec
    fresh = load_codec().image_codec
    img = np.ascontiguousarray(getattr(data, name)()[:256, :384])
    for tau in (0, 2):
        sizes = {}
        monkeypatch.setattr(codec.coder(tau), "phases", False)  # (format 11's phase offsets: tests/test_phases.py)
        for fine in (True, False):
            monkeypatch.setattr(codec.coder(tau), "fine", fine)
            out = codec.compress(img, tau)
            c = Container.from_bytes(out.data)
            kinds = {t.kind for t in c.tiles}
            assert (LEARNED_V9 in kinds) == fine and (c.version == 9) == fine, kinds
            assert fine or LEARNED_V8 in kinds or c.version <= 8
            decoded = fresh.decompress(out.data).pixels.reshape(img.shape)
            assert int(np.abs(decoded.astype(int) - img.astype(int)).max()) <= tau
            sizes[fine] = len(out.data)
        assert sizes[True] < sizes[False] if tau == 0 else sizes[True] <= sizes[False] * 1.002, (tau, sizes)


def test_the_decoders_feedback_is_the_encoders() -> None:
    """The error-feedback distance the decoder gathers from the errors it stored pixel by pixel
    (in decoding order, so W and N are always in) is :func:`scales.feedback` of the error planes,
    zero outside the patch and where a neighbour is not valid; a grey tile's one channel too."""
    from nlic.coding import scales
    from nlic.coding.residual import _ErrorBuffer
    from nlic.residual.patches import PATCH

    rng = np.random.default_rng(2)
    P = 2
    context = rng.integers(-40, 40, (P, 3, PATCH, PATCH))
    valid = np.ones((P, PATCH, PATCH), dtype=bool)
    valid[1, 40:] = valid[1, :, 50:] = False  # a partial patch
    planes = np.stack([np.stack([scales.errors(context[:, c], rng.integers(-700, 700, (P, PATCH, PATCH)), valid)
                                 for c in range(3)], 1) for _ in range(2)])  # [2, P, 3, S, S]
    want = np.stack([np.stack([scales.feedback(e[:, c]) for c in range(3)], 1) for e in planes])
    assert want.any() and not want[:, 1, :, 41:, :].any() and not want[:, 1, :, :, 51:].any()
    order = np.flatnonzero(valid.reshape(-1))  # raster order: W and N come before a pixel
    p, i, j = order // (PATCH * PATCH), order // PATCH % PATCH, order % PATCH
    for channels in (3, 1):
        buffer = _ErrorBuffer.of(order, P, 3)
        for k in range(len(order)):  # each pixel gathered, then stored
            got = buffer.feedback(k, k + 1, channels)
            assert np.array_equal(got[:, 0], want[:, p[k], :channels, i[k], j[k]]), (channels, k)
            buffer.store(k, planes[:, p[k], :channels, i[k], j[k]][:, None])
