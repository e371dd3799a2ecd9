"""Integer probability tables of discretized logistic mixtures (the exact probability path).

Everything here is integer arithmetic on the integer mixture parameters of
:mod:`nlic.residual.integer`, with tables computed by Python's ``decimal`` module (software
arithmetic, identical on every machine), never by a platform's ``exp``.

For a symbol coded at ``tau`` the bins are ``2*tau+1`` pixels wide; in bin units the mean is
``mean / (2*tau+1)`` and the scale ``scale / (2*tau+1)``, so one table serves every tau.  A
component's CDF at a bin edge is ``LOGISTIC_CDF[round((edge - mean) / scale * ARG_STEPS)]``.
Each symbol gets a window of bins around its major components (``SPREAD`` scales each side)
plus an escape entry holding the mass of the feasible bins outside the window; windows are
grouped into power-of-two widths so the entropy coder sees a few dense tables per call.

Speed: a component's masses over a window are a contiguous slice of a precomputed row (one per
scale and mean fraction), so a window costs one multiply-add of a slice per component, in a
compiled loop (numba): no per-edge CDF evaluations, no temporaries.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from nlic.compiled import numba
from nlic.residual.integer import (
    LOG_SCALE_LEVELS,
    LOG_SCALE_MIN,
    LOG_SCALE_STEPS,
    LOGIT_LIMIT,
    LOGIT_STEPS,
    MEAN_STEPS,
)

#: CDF values are integers in [0, 2**CDF_BITS]
CDF_BITS = 16
#: the standardized logistic argument is rounded to 1/ARG_STEPS and clamped to +-ARG_LIMIT
ARG_STEPS = 64
ARG_LIMIT = 12
#: fixed-point bits of the inverse scales
INV_BITS = 16
#: a tile's sharpness multiplies logit gaps by sharpness / SHARPNESS_STEPS (nlic.coding.scales)
SHARPNESS_STEPS = 8


@numba.njit(cache=True, nogil=True, inline="always")
def sharpened_gap(gap, sharpness):  # pragma: no cover - compiled
    """A logit gap (>= 0) times ``sharpness / SHARPNESS_STEPS``, rounded half up (integers)."""
    return (max(gap, 0) * sharpness + SHARPNESS_STEPS // 2) // SHARPNESS_STEPS


#: mixture weights: round(2**WEIGHT_BITS * exp(-logit gap))
WEIGHT_BITS = 12
#: window half-width in scales (a symbol outside its window is coded exactly by the escape path)
SPREAD = 5
#: components more than this many logit units below the heaviest one do not widen the window
MAJOR_GAP = 2 * LOGIT_STEPS
#: widest bin a tau can give (tau <= 255)
MAX_BIN_WIDTH = 511
#: smallest window width (bins)
MIN_WINDOW = 4


def _round(x: decimal.Decimal, mode: str = decimal.ROUND_HALF_EVEN) -> int:
    return int(x.to_integral_value(mode))


@lru_cache(maxsize=1)
def tables() -> Tables:
    """The tables (built once per process, ~0.03 s)."""
    return Tables.of(exact_vectors())


#: the decimal module's integers that the tables are built from, stored with the package: computing
#: them cost 0.05 s of every fresh ``nlic decompress`` (a tenth of a second per megapixel of a photo);
#: the tests compute them again and compare.  Computed (not read) if its key no longer matches.
VECTORS_FILE = Path(__file__).resolve().parent.parent / "assets" / "pmf_vectors.npz"
_VECTOR_NAMES = ("logistic", "weight", "log_width", "inv_scale", "half_window")


def _vectors_key() -> np.ndarray:
    """The constants the stored vectors were computed under."""
    return np.array([CDF_BITS, ARG_STEPS, ARG_LIMIT, INV_BITS, WEIGHT_BITS, SPREAD, LOGIT_LIMIT, LOGIT_STEPS,
                     LOG_SCALE_LEVELS, LOG_SCALE_STEPS, MEAN_STEPS, MAX_BIN_WIDTH, round(LOG_SCALE_MIN * 2**20)],
                    dtype=np.int64)


def exact_vectors() -> dict[str, np.ndarray]:
    """:func:`compute_vectors`, read from VECTORS_FILE when it was made under today's constants."""
    try:
        with np.load(VECTORS_FILE) as stored:
            if np.array_equal(stored["key"], _vectors_key()):
                return {name: stored[name] for name in _VECTOR_NAMES}
    except (OSError, KeyError, ValueError):
        pass
    return compute_vectors()


def save_vectors(path: Path = VECTORS_FILE) -> None:
    """Write :func:`compute_vectors` to ``path`` (after a constant above changes; a test says when)."""
    np.savez_compressed(path, key=_vectors_key(), **compute_vectors())


def compute_vectors() -> dict[str, np.ndarray]:
    """The integers every table comes from, by Python's ``decimal`` (software arithmetic, the same
    on every machine): the logistic CDF at every argument step, the weight of every logit gap,
    the log of every bin width and, per scale row, the inverse scale and the window half-width."""
    ctx = decimal.Context(prec=30)
    one = decimal.Decimal(1)
    n = ARG_LIMIT * ARG_STEPS
    logistic = np.array([_round(2**CDF_BITS / (one + ctx.exp(decimal.Decimal(-i) / ARG_STEPS)))
                         for i in range(-n, n + 1)], dtype=np.int64)
    weight = np.zeros(2 * LOGIT_LIMIT + 1, dtype=np.int64)
    for d in range(len(weight)):
        weight[d] = _round(2**WEIGHT_BITS * ctx.exp(decimal.Decimal(-d) / LOGIT_STEPS))
        if weight[d] == 0:
            break
    log_width = np.array([0] + [_round(LOG_SCALE_STEPS * ctx.ln(decimal.Decimal(w)))
                                for w in range(1, MAX_BIN_WIDTH + 1)], dtype=np.int64)
    offset = int(log_width[MAX_BIN_WIDTH])
    inv, half = [], []
    for row in range(LOG_SCALE_LEVELS + offset):
        scale = ctx.exp(decimal.Decimal(LOG_SCALE_MIN) + decimal.Decimal(row - offset) / LOG_SCALE_STEPS)
        inv.append(_round(2**INV_BITS * ARG_STEPS / (MEAN_STEPS * scale)))
        half.append(_round(SPREAD * scale * MEAN_STEPS, decimal.ROUND_CEILING))
    return {"logistic": logistic, "weight": weight, "log_width": log_width,
            "inv_scale": np.array(inv, dtype=np.int64), "half_window": np.array(half, dtype=np.int64)}


@dataclass(frozen=True)
class Tables:
    weight: np.ndarray  # [2*LOGIT_LIMIT + 1]: weight of a component a logit gap below the heaviest
    log_width: np.ndarray  # [MAX_BIN_WIDTH + 1]: round(LOG_SCALE_STEPS * ln(w))
    half_window: np.ndarray  # [rows]: ceil(SPREAD * scale * MEAN_STEPS) (1/MEAN_STEPS bins)
    reach: np.ndarray  # [rows]: bins from the mean beyond which the CDF is exactly 0 or 2**CDF_BITS
    cdf_rows: np.ndarray  # flat int32: CDF of each (row, mean fraction) at edge offsets -reach-1..reach+1
    cdf_base: np.ndarray  # [rows, MEAN_STEPS]: where each row starts in cdf_rows
    mass_rows: np.ndarray  # flat float64: bin masses (CDF differences) of each row, bins -reach-1..reach
    mass_base: np.ndarray  # [rows, MEAN_STEPS]: index of bin offset -reach-1 in mass_rows
    index_offset: int  # scale index in bin units + index_offset = row of the tables above

    @classmethod
    def build(cls) -> Tables:
        """From :func:`compute_vectors` (what :func:`tables` reads stored)."""
        return cls.of(compute_vectors())

    @classmethod
    def of(cls, vectors: dict[str, np.ndarray]) -> Tables:
        """The tables of :func:`compute_vectors`' integers (integer NumPy arithmetic only)."""
        n = ARG_LIMIT * ARG_STEPS
        logistic, weight, log_width, inv_scale = (vectors[k] for k in ("logistic", "weight", "log_width", "inv_scale"))
        offset = int(log_width[MAX_BIN_WIDTH])
        # |arg| >= n (saturated CDF) once |d| * inv >= n * 2**INV_BITS + 2**(INV_BITS-1), d in 1/16 bins
        reach = ((n << INV_BITS) + (1 << (INV_BITS - 1))) // inv_scale // MEAN_STEPS + 3
        frac = np.arange(MEAN_STEPS)[:, None]
        cdf_rows, mass_rows, cdf_base, mass_base = [], [], [], []
        cdf_at, mass_at = 0, 0
        for r, inv_r in enumerate(inv_scale):
            m = np.arange(-reach[r] - 1, reach[r] + 2)
            d = MEAN_STEPS * m[None, :] - frac  # [fractions, edges]: edge minus mean, 1/16 bins
            cdf = logistic[np.clip((d * inv_r + (1 << (INV_BITS - 1))) >> INV_BITS, -n, n) + n]
            mass = np.diff(cdf, axis=1)
            cdf_rows.append(cdf.ravel())
            mass_rows.append(mass.ravel())
            cdf_base.append(cdf_at + np.arange(MEAN_STEPS) * cdf.shape[1])
            mass_base.append(mass_at + np.arange(MEAN_STEPS) * mass.shape[1])
            cdf_at += cdf.size
            mass_at += mass.size
        i32 = lambda a: np.ascontiguousarray(a, dtype=np.int32)  # noqa: E731
        return cls(weight, log_width, vectors["half_window"], i32(reach), i32(np.concatenate(cdf_rows)),
                   i32(np.stack(cdf_base)), np.concatenate(mass_rows).astype(np.float64), i32(np.stack(mass_base)),
                   offset)


@dataclass
class BinParams:
    """One channel's mixture in bin units at a tau: each ``[N, K]`` int64 (NumPy)."""

    weights: np.ndarray
    means: np.ndarray  # 1/MEAN_STEPS bin
    rows: np.ndarray  # row of the Tables

    def take(self, idx: np.ndarray) -> BinParams:
        return BinParams(self.weights[idx], self.means[idx], self.rows[idx])

    @classmethod
    def of(cls, logits: np.ndarray, means: np.ndarray, log_scales: np.ndarray, tau: int) -> BinParams:
        """From the integer network's outputs (see :class:`nlic.residual.integer.ChannelParams`)."""
        t = tables()
        width = 2 * tau + 1
        gap = np.clip(logits.max(-1, keepdims=True) - logits, 0, 2 * LOGIT_LIMIT)
        # one component: weight 1 (the range coder normalises each row)
        weights = t.weight[gap] if logits.shape[-1] > 1 else np.ones_like(logits)
        means = (2 * means + width) // (2 * width)  # round(mean / width), halves up
        return cls(weights, means, log_scales - t.log_width[width] + t.index_offset)


# The step-by-step NumPy definitions below (BinParams.of, window_bounds, window_width, window_pmf)
# are what plan_group computes in one compiled call; the coder uses plan_group, the tests hold it
# to these definitions.


def window_bounds(p: BinParams, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last bin (inclusive) of each symbol's window, inside its feasible ``[lo, hi]``:
    ``SPREAD`` scales around every major component."""
    t = tables()
    half = t.half_window[p.rows]
    major = p.weights >= t.weight[MAJOR_GAP]
    first = (p.means - half + MEAN_STEPS // 2) // MEAN_STEPS
    last = (p.means + half + MEAN_STEPS // 2) // MEAN_STEPS
    first = np.where(major, first, np.iinfo(np.int64).max).min(-1)
    last = np.where(major, last, np.iinfo(np.int64).min).max(-1)
    first = np.maximum(np.minimum(first, hi), lo)
    last = np.minimum(np.maximum(last, first), hi)
    return first, last


def window_width(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Power-of-two window width (>= MIN_WINDOW) holding ``last - first + 1`` bins."""
    n = np.maximum(last - first + 1, MIN_WINDOW)
    return (1 << np.ceil(np.log2(n)).astype(np.int64)).astype(np.int64)


def window_pmf(p: BinParams, start: np.ndarray, width: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Integer masses of bins ``start .. start+width-1`` plus the escape mass: ``[N, width+1]``.

    The first feasible bin takes the lower tail, the last the upper tail; bins outside
    ``[lo, hi]`` get zero mass.  Every row sums to ``2**CDF_BITS * sum(weights)``.  Float64
    holding integers below 2**53 (exact in any summation order), as the range coder takes them.
    Windows start at or above ``lo`` (see :func:`window_bounds`).
    """
    t = tables()
    out = np.empty((len(start), width + 1))
    _window_masses(p.weights, p.means, p.rows, start.astype(np.int64), int(width), lo.astype(np.int64),
                   hi.astype(np.int64), t.cdf_rows, t.cdf_base, t.mass_rows, t.mass_base, t.reach, out)
    return out


#: every mass is an integer below 2**53 held in a float64, so sums are exact in any order and
#: products exact with or without fused multiply-adds: the compiler may vectorize freely
EXACT_FLOAT_FLAGS = {"reassoc", "contract"}


@numba.njit(cache=True, nogil=True, inline="always", fastmath=EXACT_FLOAT_FLAGS, error_model="numpy")
def _fill_row(out, o, s, width, low, high, weights, means, rows, n, cdf_rows, cdf_base, mass_rows, mass_base,
              reach):  # pragma: no cover - compiled
    """Masses of bins ``s .. s+width-1`` of symbol ``n`` and its escape mass into ``out[o : o+width+1]``.

    Short runs (most windows are 4 or 8 bins) index ``out`` directly; long ones go through slices
    (views with non-negative indices: loops the compiler vectorizes), whose set-up costs more than
    a few bins."""
    full = 1 << CDF_BITS
    half_step = MEAN_STEPS // 2
    bins = min(width, high - s + 1)  # window bins beyond the last feasible one get no mass
    if width > 8:
        out[o : o + width + 1] = 0.0
    else:
        for j in range(width + 1):
            out[o + j] = 0.0
    total = 0.0
    for k in range(weights.shape[1]):
        w = float(weights[n, k])
        total += w
        b = (means[n, k] + half_step) // MEAN_STEPS  # the bin of the mean
        f = means[n, k] + half_step - MEAN_STEPS * b  # and its fraction
        r = rows[n, k]
        rr = reach[r]
        # bins b-rr-1 .. b+rr carry this component's mass: a contiguous slice of its row
        j0 = max(0, b - rr - 1 - s)
        j1 = min(bins, b + rr + 1 - s)
        at = mass_base[r, f] + rr + 1 + s - b
        if j1 - j0 > 8:  # long runs: views (non-negative indices) the compiler vectorizes
            src = mass_rows[at + j0 : at + j1]
            dst = out[o + j0 : o + j1]
            for j in range(j1 - j0):
                dst[j] += w * src[j]
        else:
            for j in range(j0, j1):
                out[o + j] += w * mass_rows[at + j]
        # the end bins of the feasible range take the tails beyond them
        base = cdf_base[r, f] + rr + 1
        if s == low:
            out[o] += w * cdf_rows[base + min(max(low - b, -rr - 1), rr + 1)]
        if high < s + width:
            out[o + high - s] += w * (full - cdf_rows[base + min(max(high + 1 - b, -rr - 1), rr + 1)])
    acc = 0.0
    if width > 8:
        row = out[o : o + width]
        for j in range(width):
            acc += row[j]
    else:
        for j in range(width):
            acc += out[o + j]
    out[o + width] = total * full - acc


@numba.njit(cache=True, nogil=True, fastmath=EXACT_FLOAT_FLAGS, error_model="numpy")
def _window_masses(weights, means, rows, start, width, lo, hi, cdf_rows, cdf_base, mass_rows, mass_base, reach,
                   out):  # pragma: no cover - compiled
    flat = out.reshape(-1)
    for n in range(out.shape[0]):
        _fill_row(flat, n * (width + 1), start[n], width, lo[n], hi[n], weights, means, rows, n, cdf_rows, cdf_base,
                  mass_rows, mass_base, reach)


# ---------------------------------------------------------------------- planned groups
#
# A group (one channel of one wavefront) is coded as: its windows, one range-coder call per window
# width (ascending), then the escaped symbols, one call per feasible-span width.  Planning a group
# is one compiled call that derives every window and fills every table of the group into one flat
# buffer, so the Python side only slices that buffer for the range coder: the per-call NumPy work
# (parameters, bounds, widths, per-width copies) used to cost more than the masses themselves.

#: window widths are powers of two up to 2**MAX_WIDTH_LOG2 (a feasible span is at most 511 bins)
MAX_WIDTH_LOG2 = 12


@dataclass
class Classes:
    """Symbols grouped by segment (see :func:`plan_group`), then by table width: ``order``
    (indices into the group, each run in ascending index order), and per run ``(columns, first
    position in order, count, offset of its [count, columns] tables in masses, segment)``."""

    order: np.ndarray
    runs: list[tuple[int, int, int, int, int]]
    masses: np.ndarray

    def tables(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(indices, [count, columns] tables)`` per run: by width, ascending (one segment)."""
        return [(idx, pmf) for _, idx, pmf in self.segment_tables()]

    def segment_tables(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``(segment, indices, [count, columns] tables)`` per run: by segment, then by width."""
        return [(seg, self.order[at : at + count], self.masses[off : off + count * cols].reshape(count, cols))
                for cols, at, count, off, seg in self.runs]


@dataclass
class GroupPlan:
    """The windows of one group: :class:`BinParams`, each symbol's first window bin and window
    width, and the window tables grouped by width."""

    params: BinParams
    first: np.ndarray
    width: np.ndarray
    windows: Classes
    segments: np.ndarray  # where each stream's symbols start, and the end


def plan_group(table: np.ndarray, tau: int, lo: np.ndarray, hi: np.ndarray,
               log_scale_offset: int | np.ndarray = 0, sharpness: int | np.ndarray = SHARPNESS_STEPS,
               mean_shift: np.ndarray | None = None, segments: np.ndarray | None = None,
               rows: np.ndarray | None = None) -> GroupPlan:
    """Every window and window table of a group, from the integer network's outputs (``table``
    ``[n, 3K]``: logits, means, log-scale indices, see :class:`nlic.residual.integer.ChannelParams`),
    a log-scale offset (one for the group or one per symbol, ``[n]``; added to the indices, kept on
    the grid: :func:`nlic.coding.scales.apply`), a sharpness (every logit gap below the heaviest
    component times ``sharpness / SHARPNESS_STEPS``, rounded half up) and
    the feasible bins ``lo``/``hi`` (``[n]`` int64), and a shift of every component's mean per
    symbol (``[n]``, 1/MEAN_STEPS pixel; None: none).  Same integers as :meth:`BinParams.of`,
    :func:`window_bounds`, :func:`window_width` and :func:`window_pmf`.

    ``segments``: where the symbols of independent streams start (and the end; None: one stream),
    each with its own runs (the decoder plans a wavefront of several tiles in one call); the
    sharpness may then be one per symbol (``[n]``).

    ``rows``: the symbols' rows of ``table`` (None: its rows in order; the encoder plans its
    symbols in decoding order from the tile's table in patch order, without a reordered copy)."""
    t = tables()
    n = len(lo)
    width_px = 2 * tau + 1
    if np.ndim(log_scale_offset) == 0:
        log_scale_offset = np.full(n, int(log_scale_offset), dtype=np.int64)
    if mean_shift is None:
        mean_shift = np.zeros(n, dtype=np.int64)
    if np.ndim(sharpness) == 0:
        sharpness = np.full(n, int(sharpness), dtype=np.int64)
    bounds = np.array([0, n], dtype=np.int64) if segments is None else np.asarray(segments, dtype=np.int64)
    rows = np.zeros(0, dtype=np.int64) if rows is None else np.ascontiguousarray(rows, dtype=np.int64)
    w, m, r, first, size, order, runs, masses = _plan_windows(
        np.ascontiguousarray(table), rows, np.ascontiguousarray(log_scale_offset, dtype=np.int64),
        np.ascontiguousarray(mean_shift, dtype=np.int64), width_px,
        np.ascontiguousarray(lo, dtype=np.int64), np.ascontiguousarray(hi, dtype=np.int64), t.weight,
        int(t.log_width[width_px]), t.index_offset, t.half_window, int(t.weight[MAJOR_GAP]), t.cdf_rows,
        t.cdf_base, t.mass_rows, t.mass_base, t.reach, np.ascontiguousarray(sharpness, dtype=np.int64), bounds)
    return GroupPlan(BinParams(w, m, r), first, size, Classes(order, [tuple(x) for x in runs.tolist()], masses),
                     bounds)


def plan_escapes(plan: GroupPlan, escaped: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Classes:
    """Tables of the escaped symbols ``escaped`` (indices into the group, ascending): the mixture
    over every feasible bin with the window's bins at zero and every other bin + 1 (a row stays
    codable even where the model put no mass outside the window); grouped by the plan's segment,
    then by span width."""
    t = tables()
    order, runs, masses = _plan_escapes(escaped.astype(np.int64), plan.params.weights, plan.params.means,
                                        plan.params.rows, plan.first, plan.width, lo.astype(np.int64),
                                        hi.astype(np.int64), t.cdf_rows, t.cdf_base, t.mass_rows, t.mass_base,
                                        t.reach, plan.segments)
    return Classes(order, [tuple(x) for x in runs.tolist()], masses)


@numba.njit(cache=True, nogil=True, inline="always")
def _pow2_width(n):  # pragma: no cover - compiled
    """log2 of the power-of-two width (>= MIN_WINDOW) holding ``n`` bins."""
    e = 2  # MIN_WINDOW = 4
    while (1 << e) < n:
        e += 1
    return e


@numba.njit(cache=True, nogil=True)
def _runs_by_width(log2w, extra, segment, segments):  # pragma: no cover - compiled
    """Stable grouping of symbols by segment (``segment[i]`` ascending in ``i``, of ``segments``),
    then by width: order and (columns, at, count, offset, segment) runs, each table ``width +
    extra`` columns wide (extra 1: the escape entry of a window)."""
    n = log2w.shape[0]
    E = MAX_WIDTH_LOG2 + 1
    count = np.zeros(segments * E, dtype=np.int64)
    for i in range(n):
        count[segment[i] * E + log2w[i]] += 1
    at = np.zeros(segments * E, dtype=np.int64)
    n_runs = 0
    pos = 0
    for key in range(segments * E):
        at[key] = pos
        pos += count[key]
        if count[key]:
            n_runs += 1
    runs = np.zeros((n_runs, 5), dtype=np.int64)
    j = 0
    off = 0
    for key in range(segments * E):
        if count[key]:
            columns = (1 << (key % E)) + extra
            runs[j, 0] = columns
            runs[j, 1] = at[key]
            runs[j, 2] = count[key]
            runs[j, 3] = off
            runs[j, 4] = key // E
            off += count[key] * columns
            j += 1
    order = np.empty(n, dtype=np.int64)
    fill = at.copy()
    for i in range(n):
        key = segment[i] * E + log2w[i]
        order[fill[key]] = i
        fill[key] += 1
    return order, runs, off


@numba.njit(cache=True, nogil=True)
def _segment_of(index, bounds):  # pragma: no cover - compiled
    """The segment of each of the ascending ``index`` (``bounds``: where each segment starts, and the end)."""
    out = np.empty(index.shape[0], dtype=np.int64)
    s = 0
    for j in range(index.shape[0]):
        while index[j] >= bounds[s + 1]:
            s += 1
        out[j] = s
    return out


@numba.njit(cache=True, nogil=True, fastmath=EXACT_FLOAT_FLAGS, error_model="numpy")
def _plan_windows(table, table_rows, log_scale_offset, mean_shift, width_px, lo, hi, weight_t, log_width, index_offset,
                  half_window, major_weight, cdf_rows, cdf_base, mass_rows, mass_base, reach,
                  sharpness, bounds):  # pragma: no cover - compiled
    n, K = lo.shape[0], table.shape[1] // 3
    direct = table_rows.shape[0] == 0
    weights = np.empty((n, K), dtype=np.int64)
    means = np.empty((n, K), dtype=np.int64)
    rows = np.empty((n, K), dtype=np.int64)
    first = np.empty(n, dtype=np.int64)
    size = np.empty(n, dtype=np.int64)
    log2w = np.empty(n, dtype=np.int64)
    big = np.iinfo(np.int64).max
    half_step = MEAN_STEPS // 2
    for i in range(n):
        t = i if direct else table_rows[i]
        top = table[t, 0]
        for k in range(1, K):
            top = max(top, table[t, k])
        f, last = big, -big
        for k in range(K):
            weights[i, k] = (weight_t[min(sharpened_gap(top - table[t, k], sharpness[i]), 2 * LOGIT_LIMIT)]
                             if K > 1 else 1)
            # round(mean / width), halves up
            means[i, k] = (2 * (np.int64(table[t, K + k]) + mean_shift[i]) + width_px) // (2 * width_px)
            log_scale = min(max(np.int64(table[t, 2 * K + k]) + log_scale_offset[i], 0), LOG_SCALE_LEVELS - 1)
            rows[i, k] = log_scale - log_width + index_offset
            if weights[i, k] >= major_weight:
                half = half_window[rows[i, k]]
                f = min(f, (means[i, k] - half + half_step) // MEAN_STEPS)
                last = max(last, (means[i, k] + half + half_step) // MEAN_STEPS)
        f = max(min(f, hi[i]), lo[i])
        last = min(max(last, f), hi[i])
        first[i] = f
        log2w[i] = _pow2_width(last - f + 1)
        size[i] = 1 << log2w[i]
    order, runs, total = _runs_by_width(log2w, 1, _segment_of(np.arange(n), bounds), bounds.shape[0] - 1)
    masses = np.empty(total, dtype=np.float64)
    for r in range(runs.shape[0]):
        cols, at, count, off = runs[r, 0], runs[r, 1], runs[r, 2], runs[r, 3]
        for j in range(count):
            i = order[at + j]
            _fill_row(masses, off + j * cols, first[i], cols - 1, lo[i], hi[i], weights, means, rows, i,
                      cdf_rows, cdf_base, mass_rows, mass_base, reach)
    return weights, means, rows, first, size, order, runs, masses


@numba.njit(cache=True, nogil=True, fastmath=EXACT_FLOAT_FLAGS, error_model="numpy")
def _plan_escapes(escaped, weights, means, rows, first, size, lo, hi, cdf_rows, cdf_base, mass_rows, mass_base,
                  reach, bounds):  # pragma: no cover - compiled
    n = escaped.shape[0]
    log2w = np.empty(n, dtype=np.int64)
    for j in range(n):
        i = escaped[j]
        log2w[j] = _pow2_width(hi[i] - lo[i] + 1)
    # tables of span width: no escape entry
    local, runs, total = _runs_by_width(log2w, 0, _segment_of(escaped, bounds), bounds.shape[0] - 1)
    masses = np.empty(total, dtype=np.float64)
    row = np.empty((1 << MAX_WIDTH_LOG2) + 1, dtype=np.float64)
    order = np.empty(n, dtype=np.int64)
    for r in range(runs.shape[0]):
        span, at, count, off = runs[r, 0], runs[r, 1], runs[r, 2], runs[r, 3]
        for j in range(count):
            i = escaped[local[at + j]]
            order[at + j] = i
            _fill_row(row, 0, lo[i], span, lo[i], hi[i], weights, means, rows, i, cdf_rows, cdf_base, mass_rows,
                      mass_base, reach)
            for b in range(span):
                inside = first[i] <= lo[i] + b < first[i] + size[i]
                masses[off + j * span + b] = 0.0 if inside else row[b] + 1.0
    return order, runs, masses
