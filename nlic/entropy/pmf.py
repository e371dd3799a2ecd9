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

import numba
import numpy as np

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
    """The tables (built once per process, ~0.1 s)."""
    return Tables.build()


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
        inv_scale = np.array(inv, dtype=np.int64)
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
        return cls(weight, log_width, np.array(half, dtype=np.int64), i32(reach), i32(np.concatenate(cdf_rows)),
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


@numba.njit(cache=True, nogil=True)
def _window_masses(weights, means, rows, start, width, lo, hi, cdf_rows, cdf_base, mass_rows, mass_base, reach,
                   out):  # pragma: no cover - compiled
    full = 1 << CDF_BITS
    half_step = MEAN_STEPS // 2
    for n in range(out.shape[0]):
        s, low, high = start[n], lo[n], hi[n]
        bins = min(width, high - s + 1)  # window bins beyond the last feasible one get no mass
        for j in range(width + 1):
            out[n, j] = 0.0
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
            for j in range(j0, j1):
                out[n, j] += w * mass_rows[at + j]
            # the end bins of the feasible range take the tails beyond them
            base = cdf_base[r, f] + rr + 1
            if s == low:
                out[n, 0] += w * cdf_rows[base + min(max(low - b, -rr - 1), rr + 1)]
            if high < s + width:
                out[n, high - s] += w * (full - cdf_rows[base + min(max(high + 1 - b, -rr - 1), rr + 1)])
        acc = 0.0
        for j in range(width):
            acc += out[n, j]
        out[n, width] = total * full - acc


