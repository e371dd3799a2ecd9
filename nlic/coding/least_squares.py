"""Format 9's least-squares mean source: per tile and channel, a linear prediction of each pixel
from its causal neighbours and (G, B) the pixel's earlier channels, fitted by the encoder and
stored as integers, whose distance from the network's mean selects a mean offset
(:mod:`nlic.coding.scales`).

The network is the same for every photo; a photo's own statistics (how smooth its sky is, how
closely its G follows R) it cannot know.  Classic lossless coders fit a predictor per image
(least-squares coders such as TMW and MRP beat JPEG-XL that way); here the fit is one more lead
whose disagreement with the network the tile's mean offsets weigh.  Real bytes on the validation
split and the samples (14 photos, searched after the other sources): -1.3 % at tau = 0 on top of
format 8 (enl_peaks -7 %), with format 9's finer mean levels -1.7 %.  The neighbours' errors from
it are one of format 9's two error-feedback sources (:data:`nlic.coding.scales.LS_ERROR_SOURCE`).

The prediction is integers only: coefficients in 1/2**FRACTION_BITS, taps the reconstructed
residuals the network reads (zero outside the patch), the sum shifted down to 1/MEAN_STEPS pixel,
so encoder and decoder agree on any machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nlic.compiled import numba
from nlic.errors import BitstreamError
from nlic.residual.integer import MEAN_STEPS

#: a channel's own causal neighbours, (row, column) offsets: W, N, NW, NE, WW, NN, NNW, NWW, NNE and
#: NNEE (the wavefront masks leave out the pixel two to the right of N)
OWN_TAPS = ((0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0), (-2, -1), (-1, -2), (-2, 1), (-2, 2))
#: an earlier channel's neighbours read besides its value at the pixel: W, N, NW, NE
CROSS_TAPS = ((0, -1), (-1, 0), (-1, -1), (-1, 1))
#: coefficients in 1/2**FRACTION_BITS (the bias in 1/2**FRACTION_BITS pixel), stored as int16
FRACTION_BITS = 8
COEFFICIENT_LIMIT = 2**15 - 1
#: the sum's shift down to 1/MEAN_STEPS pixel
SHIFT = FRACTION_BITS - int(np.log2(MEAN_STEPS))
#: pixels the encoder fits on at most (evenly spaced): on 14 held-out photos 4,096 gave files
#: 0.1 % smaller than 65,536 (and 16,384 or 1,024) at tau = 0, for a sixteenth of the work
FIT_PIXELS = 4096
#: reweighted steps towards a least-absolute-error fit (weights 1 / max(|error|, ROBUST_FLOOR)
#: pixels): the code length grows with the error, not its square, and an edge's few large errors
#: should not steer the predictor of the rest (-0.05 % at tau = 0 and 2 with two steps)
ROBUST_STEPS = 2
ROBUST_FLOOR = 1.0
#: the farthest tap's distance (the zero border the encoder's fit reads beyond a patch)
HALO = max(max(abs(dy), abs(dx)) for dy, dx in OWN_TAPS + CROSS_TAPS)
#: ridge added to the normal equations (relative to their mean diagonal): a flat tile's taps are
#: all equal and the plain system singular
RIDGE = 1e-6


def terms(channel: int) -> int:
    """Coefficients of a channel's predictor: its own taps, per earlier channel its value and
    CROSS_TAPS, and a bias."""
    return len(OWN_TAPS) + channel * (1 + len(CROSS_TAPS)) + 1


def bits(channel: int) -> int:
    """What a channel's coefficients cost in the file."""
    return 16 * terms(channel)


#: the longest predictor (B's), the width of the coefficient arrays
MOST_TERMS = terms(2)


def _sampled_features(padded: np.ndarray, channel: int, where: np.ndarray) -> np.ndarray:
    """The values a channel's predictor weighs, in coefficient order, at the pixels ``where`` (flat
    indices into ``[P, S, S]``) of patches ``[P, c, S, S]`` of reconstructed residuals (``padded``
    by HALO zeros, the neighbours outside the patch): its own taps, per earlier channel its value at
    the pixel and CROSS_TAPS, then one (the bias); ``[n, terms]`` float64."""
    S, halo = padded.shape[-1] - 2 * HALO, HALO
    p, i, j = where // (S * S), where // S % S + halo, where % S + halo
    columns = [padded[p, channel, i + dy, j + dx] for dy, dx in OWN_TAPS]
    for q in range(channel):
        columns += [padded[p, q, i, j]] + [padded[p, q, i + dy, j + dx] for dy, dx in CROSS_TAPS]
    return np.stack(columns + [np.ones(len(where), dtype=padded.dtype)], 1).astype(np.float64)


def fit(context: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each channel's coefficients ``[c, MOST_TERMS]`` (integers, zero beyond the channel's
    :func:`terms`), fitted on the tile's valid pixels (``valid`` ``[P, S, S]``; at most FIT_PIXELS
    of them, evenly spaced) by least squares reweighted ROBUST_STEPS times."""
    channels = context.shape[1]
    where = np.flatnonzero(np.asarray(valid).reshape(-1))
    if len(where) > FIT_PIXELS:
        where = where[np.linspace(0, len(where) - 1, FIT_PIXELS).astype(np.int64)]
    out = np.zeros((channels, MOST_TERMS), dtype=np.int64)
    padded = np.pad(np.asarray(context, dtype=np.float32), ((0, 0), (0, 0), (HALO, HALO), (HALO, HALO)))
    for c in range(channels):
        x = _sampled_features(padded, c, where)
        y = np.asarray(context[:, c], dtype=np.float64).reshape(-1)[where]
        weights = _robust_fit(x, y, ROBUST_STEPS, RIDGE, ROBUST_FLOOR)
        out[c, : terms(c)] = np.clip(np.round(weights * 2**FRACTION_BITS), -COEFFICIENT_LIMIT, COEFFICIENT_LIMIT)
    return out


@numba.njit(cache=True, nogil=True)
def _robust_fit(x, y, steps, ridge, floor):  # pragma: no cover - compiled
    """Least squares of ``y`` on the columns of ``x`` (ridge ``ridge`` times the normal equations'
    mean diagonal), then ``steps`` times reweighted by ``1 / max(|error|, floor)``: the weights.

    Compiled loops and a Cholesky solve instead of NumPy's BLAS and LAPACK: the systems are tiny
    (at most 21 unknowns), and a threaded BLAS called from the encoder's tile threads waited for a
    core the other tile held (a 21 x 21 solve took 5 ms instead of 10 us; whole encodes 5-10 %
    slower), and its sums' order, and so the stored coefficients, could follow its thread count."""
    n, t = x.shape
    rows = np.ones(n)
    normal = np.empty((t, t))
    rhs = np.empty(t)
    weights = np.zeros(t)
    for _ in range(1 + steps):
        normal[:] = 0.0
        rhs[:] = 0.0
        for i in range(n):
            for a in range(t):
                xa = rows[i] * x[i, a]
                rhs[a] += xa * y[i]
                for b in range(a, t):
                    normal[a, b] += xa * x[i, b]
        trace = 0.0
        for a in range(t):
            trace += normal[a, a]
        lift = ridge * max(trace / t, 1.0)
        for a in range(t):
            normal[a, a] += lift
            for b in range(a):
                normal[a, b] = normal[b, a]
        weights = _cholesky_solve(normal, rhs)
        for i in range(n):
            error = y[i]
            for a in range(t):
                error -= x[i, a] * weights[a]
            rows[i] = 1.0 / max(abs(error), floor)
    return weights


@numba.njit(cache=True, nogil=True)
def _cholesky_solve(a, b):  # pragma: no cover - compiled
    """``a^-1 b`` for a symmetric positive definite ``a`` (the ridge keeps it so)."""
    t = a.shape[0]
    low = np.zeros((t, t))
    for j in range(t):
        pivot = a[j, j]
        for k in range(j):
            pivot -= low[j, k] * low[j, k]
        low[j, j] = np.sqrt(max(pivot, 1e-300))
        for i in range(j + 1, t):
            total = a[i, j]
            for k in range(j):
                total -= low[i, k] * low[j, k]
            low[i, j] = total / low[j, j]
    z = np.empty(t)
    for i in range(t):
        total = b[i]
        for k in range(i):
            total -= low[i, k] * z[k]
        z[i] = total / low[i, i]
    out = np.empty(t)
    for i in range(t - 1, -1, -1):
        total = z[i]
        for k in range(i + 1, t):
            total -= low[k, i] * out[k]
        out[i] = total / low[i, i]
    return out


def predict(context: np.ndarray, coefficients: np.ndarray, channel: int) -> np.ndarray:
    """A channel's prediction (1/MEAN_STEPS pixel) of every pixel of patches ``[P, c, S, S]``
    under its ``coefficients`` (a row of :func:`fit`; the terms of :func:`_sampled_features`):
    ``[P, S, S]``, the encoder's form of :func:`gathered` and :func:`add_current`."""
    return _predict(np.ascontiguousarray(context, dtype=np.int64), np.ascontiguousarray(coefficients, dtype=np.int64),
                    channel)


def pack(coefficients: np.ndarray, used: Sequence[bool]) -> bytes:
    """The coefficients of the channels that ``used`` the source: a byte with a bit per such
    channel, then their :func:`terms` int16 each."""
    mask = sum(1 << c for c, u in enumerate(used) if u)
    rows = [np.asarray(coefficients[c, : terms(c)], dtype="<i2").tobytes() for c, u in enumerate(used) if u]
    return bytes([mask]) + b"".join(rows)


def unpack(data: bytes, at: int, channels: int) -> tuple[np.ndarray, list[bool], int]:
    """Inverse of :func:`pack` from ``data[at:]``: the coefficients ``[channels, MOST_TERMS]``
    (zero for channels without), which channels have them, and where they end."""
    if at >= len(data) or data[at] >> channels:
        raise BitstreamError("file is corrupt (least-squares coefficients do not match the tile)")
    used = [bool(data[at] >> c & 1) for c in range(channels)]
    at += 1
    out = np.zeros((channels, MOST_TERMS), dtype=np.int64)
    for c in range(channels):
        if used[c]:
            count = terms(c)
            if len(data) < at + 2 * count:
                raise BitstreamError("file is corrupt (least-squares coefficients do not match the tile)")
            out[c, :count] = np.frombuffer(data[at : at + 2 * count], dtype="<i2")
            at += 2 * count
    return out, used, at


def tap_index(offsets: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray] | None:
    """Where OWN_TAPS and CROSS_TAPS are among a model's gathered taps (None: one is missing, so the
    model's tiles carry no least-squares source)."""
    if not all(t in offsets for t in OWN_TAPS + CROSS_TAPS):
        return None
    return (np.asarray([offsets.index(t) for t in OWN_TAPS], dtype=np.int64),
            np.asarray([offsets.index(t) for t in CROSS_TAPS], dtype=np.int64))


def gathered(taps: np.ndarray, index: tuple[np.ndarray, np.ndarray], coefficients: np.ndarray, tile: np.ndarray,
             channels: int) -> np.ndarray:
    """The decoder's sums (1/2**FRACTION_BITS pixel) of every term but the pixel's earlier
    channels for rows ``[n, taps*3]`` of gathered residuals ((tap, rgb) order): ``[n, channels]``
    int64; ``coefficients`` ``[T, channels, MOST_TERMS]`` of each row's ``tile``.  After each
    channel's step :func:`add_current` adds its value; :func:`prediction` reads the result."""
    return _gathered(taps, index[0], index[1], coefficients, tile, channels)


def add_current(sums: np.ndarray, coefficients: np.ndarray, tile: np.ndarray, channel: int,
                values: np.ndarray) -> None:
    """Add a decoded channel's ``values`` ``[n]`` (context residuals) to the later channels' sums
    (in place)."""
    _add_current(sums, coefficients, tile, channel, np.ascontiguousarray(values, dtype=np.int64))


@numba.njit(cache=True, nogil=True)
def _predict(r, row, channel):  # pragma: no cover - compiled
    P, _, S, _ = r.shape
    out = np.empty((P, S, S), dtype=np.int64)
    own, cross = OWN_TAPS, CROSS_TAPS
    for p in range(P):
        for i in range(S):
            for j in range(S):
                total = np.int64(0)
                k = 0
                for t in range(len(own)):
                    y, x = i + own[t][0], j + own[t][1]
                    if 0 <= y and 0 <= x < S:
                        total += row[k] * r[p, channel, y, x]
                    k += 1
                for q in range(channel):
                    total += row[k] * r[p, q, i, j]
                    k += 1
                    for t in range(len(cross)):
                        y, x = i + cross[t][0], j + cross[t][1]
                        if 0 <= y and 0 <= x < S:
                            total += row[k] * r[p, q, y, x]
                        k += 1
                out[p, i, j] = (total + row[k]) >> SHIFT
    return out


@numba.njit(cache=True, nogil=True)
def _gathered(taps, own, cross, coefficients, tile, channels):  # pragma: no cover - compiled
    n = taps.shape[0]
    out = np.zeros((n, channels), dtype=np.int64)
    for i in range(n):
        t = tile[i]
        for c in range(channels):
            row = coefficients[t, c]
            total = np.int64(0)
            for k in range(own.shape[0]):
                total += row[k] * np.int64(taps[i, 3 * own[k] + c])
            at = own.shape[0]
            for q in range(c):
                at += 1  # (the pixel's value: add_current)
                for k in range(cross.shape[0]):
                    total += row[at + k] * np.int64(taps[i, 3 * cross[k] + q])
                at += cross.shape[0]
            out[i, c] = total + row[at]
    return out


@numba.njit(cache=True, nogil=True)
def _add_current(sums, coefficients, tile, channel, values):  # pragma: no cover - compiled
    own, per = len(OWN_TAPS), 1 + len(CROSS_TAPS)
    for i in range(sums.shape[0]):
        for c in range(channel + 1, sums.shape[1]):
            sums[i, c] += coefficients[tile[i], c, own + channel * per] * values[i]
