"""The encoder's choice of a tile's offsets (:mod:`nlic.coding.scales` says what they are and how
both sides apply them): an estimate of a sample's code length under candidate offsets, compiled, and
the searches that pick the tile's log-scale offsets, per-patch deltas, sharpness, class, mean and
phase offsets with it.  Float arithmetic on the integer mixtures: only the encoder computes it and
the file stores the choice, so nothing here has to match bit for bit on another machine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial

import numpy as np

from nlic.coding.scale_fields import DELTA_MAX, DELTA_MIN, DELTA_STEP
from nlic.coding.scales import LS_SOURCES, MEAN_LEVELS, MEAN_SOURCES, PHASES, SYMBOL_CLASSES, apply, mean_shift
from nlic.compiled import numba
from nlic.entropy.pmf import SHARPNESS_STEPS, sharpened_gap
from nlic.residual.integer import LOG_SCALE_LEVELS, LOG_SCALE_MIN, LOG_SCALE_STEPS, LOGIT_STEPS, MEAN_STEPS

#: offsets searched, in log-scale grid steps (1/16 natural-log unit): -2 .. +1, first in COARSE
#: steps from 0 while the estimate falls, then around the vertex of a parabola through the best and
#: its neighbours (the estimate is smooth in the offset)
LOWEST, HIGHEST, COARSE = -32, 16, 4
#: symbols per channel the choice is estimated on (a fixed, evenly spaced sample)
SAMPLES = 4096
#: an offset is kept only when it saves at least this share of the channel's estimated bits
MIN_GAIN = 0.002
#: symbols per patch and channel the deltas are estimated on (evenly spaced in decoding order)
PATCH_SAMPLES = 1024
#: sharpness values searched (format 4), in 1/SHARPNESS_STEPS: logit gaps times 1/2 .. 8
SHARPNESS = (4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64)
#: a class's offset is stored when its estimated saving (scaled from the sample to the tile) passes
#: the byte it costs
CLASS_MIN_BITS = 8.0
#: mean offsets searched, in 1/MEAN_STEPS bin: two bins either way, in MEAN_COARSE steps from 0 then unit
#: steps near the best, one source after the other, MEAN_SWEEPS times
MEAN_LOWEST, MEAN_HIGHEST, MEAN_COARSE = -32, 32, 8
#: a mean offset is stored when its estimated saving passes the byte it costs
MEAN_MIN_BITS = 8.0
#: the sources' offsets are searched one after the other, then again each under all the others'
#: (the sources overlap: MED's pull and the chroma source's share most of their lead, and the
#: first one searched took what a later one does better).  Real bytes on the validation split and
#: samples (14 photos): a second sweep -1.1 % at tau = 0 and -0.5 % at tau = 2 (a third -0.2 % more
#: at tau = 0), about 0.14 s/MP more encoding each; the decoder reads the same offsets
MEAN_SWEEPS = 2
#: the first sweep reads every second symbol of the sample: 0.01-0.02 % larger files, a quarter of
#: the search saved (the second on every second symbol instead: +0.1-0.2 %)
FIRST_SWEEP_STRIDE = 2
#: the mean offsets are chosen on every MEAN_SAMPLE_STRIDE-th symbol of the classes' sample: every
#: second one gave files 0.27 % larger at tau = 2 on three photos for 8 % less encoding; a coarse
#: step of half a bin (8) gives the same files as a quarter (4), 3 % faster
MEAN_SAMPLE_STRIDE = 1
#: class offsets searched, in log-scale grid steps, on top of the patch's offset
CLASS_LOWEST, CLASS_HIGHEST, CLASS_COARSE = -32, 24, 4
#: the class offsets are chosen on every CLASS_SAMPLE_STRIDE-th symbol of the per-patch sample: on
#: three photos every second one gave files 0.01-0.02 % larger for half the search
CLASS_SAMPLE_STRIDE = 2
#: a channel's phase offsets are kept only where its symbols cost at least PHASE_MIN_BITS each (as
#: estimated on the sample): on near-flat tiles (enl_peaks at tau = 2: 0.006-0.1 bit a symbol) the
#: estimated savings of sharper mixtures did not reach the range coder (+0.46 % with offsets kept
#: wherever they were estimated to pay), on tiles of photos that once were JPEGs (0.25-1 bit) they did
PHASE_MIN_BITS = 0.2
#: and they are searched at tau <= PHASE_MAX_TAU.  Real bytes, learned code, format 11 against 9,
#: validation split / samples: -0.76 / -0.27 % at tau = 0, -0.27 / -0.08 % at tau = 1, -0.11 / -0.01 %
#: at tau = 2, +0.05 / +0.03 % at tau = 5 (the savings shrink with the residual's roughness, the
#: offsets' bytes do not)
PHASE_MAX_TAU = 2


class _CodeLength:
    """Estimated bits of a sample of symbols (bins) under their integer mixtures ``[n, K]``, as a
    function of the offset (float64; what does not depend on the offset is computed once)."""

    def __init__(self, logits: np.ndarray, means: np.ndarray, log_scales: np.ndarray, symbols: np.ndarray,
                 lo: np.ndarray, hi: np.ndarray, tau: int) -> None:
        width = 2 * tau + 1
        weights = np.exp((logits - logits.max(-1, keepdims=True)) / LOGIT_STEPS)
        self.weights = weights / weights.sum(-1, keepdims=True)
        mu = means / MEAN_STEPS
        centre = (symbols * width)[:, None]
        self.upper = np.where((symbols >= hi)[:, None], np.inf, centre + tau + 0.5 - mu)
        self.lower = np.where((symbols <= lo)[:, None], -np.inf, centre - tau - 0.5 - mu)
        self.log_scales = log_scales
        self.inverse_scale = np.exp(-(LOG_SCALE_MIN + np.arange(LOG_SCALE_LEVELS) / LOG_SCALE_STEPS))

    def __call__(self, offset: int) -> float:
        inv = self.inverse_scale[apply(self.log_scales, offset)]
        sig = lambda v: np.tanh(0.5 * v)  # noqa: E731 - 2 * logistic - 1, no overflow
        p = 0.5 * (self.weights * (sig(self.upper * inv) - sig(self.lower * inv))).sum(-1)
        return float(-np.log2(np.maximum(p, 2.0**-30)).sum())


def choose(tables: list[np.ndarray], symbols: list[np.ndarray], lo: list[np.ndarray], hi: list[np.ndarray],
           tau: int, sharpness: list[int] | None = None) -> tuple[list[int], float]:
    """The offset of each channel from a sample of its symbols, and the sample's estimated bits
    under them: ``tables[c]`` their integer mixtures ``[n, 3K]``, ``symbols``/``lo``/``hi`` ``[n]``
    their bins and feasible bins.  Coarse steps from 0 within LOWEST..HIGHEST while the estimate
    falls, then around the vertex of a parabola through the best and its neighbours (the estimate
    is smooth in the offset); zero unless the best saves MIN_GAIN."""
    offsets, total = [], 0.0
    sharp = sharpness or [SHARPNESS_STEPS] * len(tables)
    for table, sym, low, high, s in zip(tables, symbols, lo, hi, sharp):
        best, cost, zero = _search_channel(table, sym, low, high, np.array([0, len(sym)]), tau, 0, 1,
                                           LOWEST, HIGHEST, COARSE, s)
        keep = zero[0] - cost[0] > MIN_GAIN * zero[0]
        offsets.append(int(best[0]) if keep else 0)
        total += float(cost[0] if keep else zero[0])
    return offsets, total


def choose_sharpness(tables: list[np.ndarray], symbols: list[np.ndarray], lo: list[np.ndarray],
                     hi: list[np.ndarray], tau: int, offsets: list[int]) -> list[int]:
    """Each channel's sharpness (of SHARPNESS) under the tile's offsets, from the same sample as
    :func:`choose`: from neutral, a step at a time towards the side that falls while the estimate
    falls (the estimate is smooth in the sharpness; a pass over all of them cost twice the
    evaluations); neutral unless the best saves MIN_GAIN."""
    out = []
    neutral = SHARPNESS.index(SHARPNESS_STEPS)
    for table, sym, low, high, offset in zip(tables, symbols, lo, hi, offsets):
        at = cache(partial(_sharpness_cost, table, sym, low, high, tau, offset))
        best = _walk_from(neutral, len(SHARPNESS), at)
        out.append(SHARPNESS[best] if at(neutral) - at(best) > MIN_GAIN * at(neutral) else SHARPNESS_STEPS)
    return out


def _sharpness_cost(table: np.ndarray, symbols: np.ndarray, lo: np.ndarray, hi: np.ndarray, tau: int, offset: int,
                    index: int) -> float:
    """The estimated bits of a sample under log-scale ``offset`` and ``SHARPNESS[index]``."""
    return float(_search_channel(table, symbols, lo, hi, np.array([0, len(symbols)]), tau, offset, 1, 0, 0, 1,
                                 SHARPNESS[index])[1][0])


def _walk_from(start: int, count: int, at: Callable[[int], float]) -> int:
    """The index in ``0 .. count-1`` reached from ``start`` by steps towards the better neighbour
    while the estimate ``at`` falls (a tie keeps the smaller index)."""
    best = min((i for i in (start - 1, start, start + 1) if 0 <= i < count), key=lambda i: (at(i), i))
    side = 1 if best > start else -1
    while best != start and 0 <= best + side < count and at(best + side) < at(best):
        best += side
    return best


def refine(tables: list[np.ndarray], symbols: list[np.ndarray], lo: list[np.ndarray], hi: list[np.ndarray],
           patch: np.ndarray, patches: int, tau: int, tile_offsets: list[int],
           sharpness: list[int] | None = None) -> tuple[np.ndarray, float]:
    """Per-patch deltas ``[patches, c]`` around the tile's offsets, each the best for its patch's
    symbols of the sample (as :func:`choose`; ``patch`` ``[n]``: their patch), and the sample's
    estimated bits under them."""
    deltas = np.zeros((patches, len(tables)), dtype=np.int64)
    by_patch = _stable_order(patch)
    starts = np.searchsorted(patch[by_patch], np.arange(patches + 1))
    total = 0.0
    sharp = sharpness or [SHARPNESS_STEPS] * len(tables)
    for c, (table, sym, low, high) in enumerate(zip(tables, symbols, lo, hi)):
        best, cost, _ = _search_channel(table, sym, low, high, starts, tau, int(tile_offsets[c]), DELTA_STEP,
                                        DELTA_MIN, DELTA_MAX, 4, sharp[c], order=by_patch)
        deltas[:, c] = best
        total += float(cost.sum())
    return deltas, total


def choose_classes(tables: list[np.ndarray], symbols: list[np.ndarray], lo: list[np.ndarray], hi: list[np.ndarray],
                   classes: list[np.ndarray], base: list[np.ndarray], tau: int, sharpness: list[int] | None = None,
                   scale: float = 1.0, shifts: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
    """Each channel's offset per symbol class ``[c, SYMBOL_CLASSES]`` on top of each symbol's
    offset ``base[c]`` (the patch's), from a sample of symbols (as :func:`refine`; ``classes[c]``:
    their classes; ``scale``: the tile's symbols per sampled one; ``shifts[c]``: their mean shifts,
    :func:`~nlic.coding.scales.mean_shift`, None: none).  A class keeps 0 unless its move saves
    more than CLASS_MIN_BITS in the tile (the byte that stores it)."""
    out = np.zeros((len(tables), SYMBOL_CLASSES), dtype=np.int64)
    sharp = sharpness or [SHARPNESS_STEPS] * len(tables)
    shifts = shifts or [None] * len(tables)
    for c, (table, sym, low, high, cls, off) in enumerate(zip(tables, symbols, lo, hi, classes, base)):
        order = _stable_order(cls)
        starts = np.searchsorted(cls[order], np.arange(SYMBOL_CLASSES + 1))
        best, cost, zero = _search_channel(table, sym, low, high, starts, tau, 0, 1, CLASS_LOWEST, CLASS_HIGHEST,
                                           CLASS_COARSE, sharp[c], order=order, moved_by=off, shifted_by=shifts[c])
        out[c] = np.where((zero - cost) * scale > CLASS_MIN_BITS, best, 0)
    return out


@dataclass
class PhaseSample:
    """A sample of a tile's symbols as :func:`choose_phases` reads them, per channel: mixtures
    ``[n, 3K]``, bins, feasible bins, offsets (the patch's and class's) and mean shifts (None:
    none); and every symbol's :func:`~nlic.coding.scales.phase_of`."""

    tables: list[np.ndarray]
    symbols: list[np.ndarray]
    lo: list[np.ndarray]
    hi: list[np.ndarray]
    phases: np.ndarray
    base: list[np.ndarray]
    shifts: list[np.ndarray] | None


def _by_phase(sample: PhaseSample) -> tuple[np.ndarray, np.ndarray]:
    order = _stable_order(sample.phases)
    return order, np.searchsorted(sample.phases[order], np.arange(PHASES + 1))


def choose_phases(fit: PhaseSample, check: PhaseSample, tau: int, sharpness: list[int] | None,
                  symbols_in_tile: int) -> np.ndarray | None:
    """Each channel's offset per pixel phase ``[c, PHASES]`` on top of each symbol's offsets: found
    on the sample ``fit`` (as :func:`choose_classes`), then measured on the disjoint sample
    ``check`` (64 offsets fitted to a few hundred symbols each look better on those symbols than they
    are: on smooth photos at tau >= 1 the fitted ones made files up to 5 % larger).  A phase keeps
    its offset where it saves more than CLASS_MIN_BITS in the tile on ``check``, a channel its
    offsets where together they save more than they and its mask (PHASES bits) cost; None where no
    channel keeps one (the tile stays format 9)."""
    channels = len(fit.tables)
    out = np.zeros((channels, PHASES), dtype=np.int64)
    sharp = sharpness or [SHARPNESS_STEPS] * channels
    fit_order, fit_starts = _by_phase(fit)
    check_order, check_starts = _by_phase(check)
    scale = symbols_in_tile / max(len(check.phases), 1)
    for c in range(channels):
        def measured(moved: np.ndarray, c: int = c) -> np.ndarray:  # the check sample's bits per phase
            return _search_channel(check.tables[c], check.symbols[c], check.lo[c], check.hi[c], check_starts, tau,
                                   0, 1, 0, 0, 1, sharp[c], order=check_order, moved_by=moved,
                                   shifted_by=None if check.shifts is None else check.shifts[c])[2]

        before = measured(check.base[c])
        if before.sum() < PHASE_MIN_BITS * len(check.phases):  # (a near-flat channel: no fit searched)
            continue
        best, _, _ = _search_channel(fit.tables[c], fit.symbols[c], fit.lo[c], fit.hi[c], fit_starts, tau, 0, 1,
                                     CLASS_LOWEST, CLASS_HIGHEST, CLASS_COARSE, sharp[c], order=fit_order,
                                     moved_by=fit.base[c], shifted_by=None if fit.shifts is None else fit.shifts[c])
        if not best.any():
            continue
        saving = (before - measured(check.base[c] + best[check.phases])) * scale
        keep = (saving > CLASS_MIN_BITS) & (best != 0)
        if (saving[keep] - CLASS_MIN_BITS).sum() > PHASES:
            out[c] = np.where(keep, best, 0)
    return out if out.any() else None


def choose_means(tables: list[np.ndarray], symbols: list[np.ndarray], lo: list[np.ndarray], hi: list[np.ndarray],
                 levels: list[list[np.ndarray | None]], base: list[np.ndarray], tau: int,
                 sharpness: list[int] | None = None, scale: float = 1.0,
                 source_bits: Sequence[float] | None = None) -> np.ndarray:
    """Each channel's mean offsets per source and mean level ``[c, MEAN_SOURCES, MEAN_LEVELS]``
    (1/MEAN_STEPS bin; ``levels[c]``: the mean levels of each of its sources, None for one it does
    not have), from a sample of symbols under their log-scale offsets ``base[c]`` (as
    :func:`choose_classes`), one source after the other under the offsets of the others, MEAN_SWEEPS
    times; an offset is kept where it saves more than MEAN_MIN_BITS in the tile, and the
    least-squares sources' offsets where together they save more than the coefficients they read
    cost (``source_bits`` ``[c]``; None: nothing)."""
    out = np.zeros((len(tables), MEAN_SOURCES, MEAN_LEVELS), dtype=np.int64)
    sharp = sharpness or [SHARPNESS_STEPS] * len(tables)
    width = 2 * tau + 1
    for c, (table, sym, low, high, sources, off) in enumerate(zip(tables, symbols, lo, hi, levels, base)):
        savings: dict[int, float] = {}
        weights = mixture_weights(table, sharp[c])
        for sweep in range(MEAN_SWEEPS):
            # (the first sweep on every FIRST_SWEEP_STRIDE-th symbol: the later ones refine it)
            stride = FIRST_SWEEP_STRIDE if sweep == 0 and MEAN_SWEEPS > 1 else 1
            sub = slice(None, None, stride)
            part = [None if lev is None else lev[sub] for lev in sources]
            # the sweep's symbols, contiguous once for all its sources (the search reads contiguous arrays)
            tab_s, sym_s, low_s, high_s, off_s = (np.ascontiguousarray(x[sub], dtype=t) for x, t in (
                (table, np.int32), (sym, np.int64), (low, np.int64), (high, np.int64), (off, np.int64)))
            weights_s = np.ascontiguousarray(weights[sub], dtype=np.float64)
            for j, lev in enumerate(part):
                if lev is None:
                    continue
                order = _stable_order(lev)
                starts = np.searchsorted(lev[order], np.arange(MEAN_LEVELS + 1))
                others = out[c].copy()
                others[j] = 0
                best, cost, zero = _search_channel(tab_s, sym_s, low_s, high_s, starts, tau, 0, 0,
                                                   MEAN_LOWEST, MEAN_HIGHEST, MEAN_COARSE, sharp[c],
                                                   shift_step=width / MEAN_STEPS, order=order, moved_by=off_s,
                                                   # and shifted by the other sources' offsets:
                                                   shifted_by=mean_shift(part, others, width),
                                                   weights=weights_s)
                saved = (zero - cost) * scale * stride
                out[c, j] = np.where(saved > MEAN_MIN_BITS, best, 0)
                savings[j] = float((saved * (out[c, j] != 0)).sum())
            if source_bits is not None and sum(savings.get(j, 0.0) for j in LS_SOURCES) <= source_bits[c]:
                out[c, list(LS_SOURCES)] = 0  # (the sources searched after them took their offsets into account)
    return out


def _search_channel(table: np.ndarray, symbols: np.ndarray, lo: np.ndarray, hi: np.ndarray, starts: np.ndarray,
                    tau: int, base: int, step: int, lowest: int, highest: int, coarse: int,
                    sharpness: int = SHARPNESS_STEPS, shift_step: float = 0.0, order: np.ndarray | None = None,
                    moved_by: np.ndarray | None = None, shifted_by: np.ndarray | None = None,
                    weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each group ``starts[g]:starts[g+1]`` of symbols (mixtures ``table`` ``[n, 3K]`` under
    ``sharpness``), the best log-scale offset ``base + step * d`` and mean shift ``shift_step * d``
    pixels over ``d`` in ``lowest..highest`` (coarse steps from 0 while the estimate falls, then
    unit steps around a parabola's vertex, or halving steps at the range's ends; a tie keeps the
    smaller move): ``d``, its estimated bits and those at ``d = 0``.

    ``order``: the symbols in group order (indices into the arrays; None: as they are);
    ``moved_by``, ``shifted_by``: each symbol's log-scale offset and mean shift to apply first, as
    :func:`~nlic.coding.scales.moved` and :func:`~nlic.coding.scales.shifted` do.  Read in place:
    copying the reordered, moved and shifted tables cost the encoder about as much as the searches
    on them.  ``weights``: the table's mixture weights under ``sharpness`` (:func:`mixture_weights`;
    None: computed here)."""
    inverse_scale = np.exp(-(LOG_SCALE_MIN + np.arange(LOG_SCALE_LEVELS) / LOG_SCALE_STEPS))
    none = np.zeros(0, dtype=np.int64)
    index = np.arange(len(symbols), dtype=np.int64) if order is None else np.ascontiguousarray(order, dtype=np.int64)
    per_symbol = (none if x is None else np.ascontiguousarray(x, dtype=np.int64) for x in (moved_by, shifted_by))
    return _search(np.ascontiguousarray(table, dtype=np.int32),
                   *(np.ascontiguousarray(x, dtype=np.int64) for x in (symbols, lo, hi, starts)), index, *per_symbol,
                   tau, inverse_scale, base, step, float(shift_step), lowest, highest, max(coarse, 1), sharpness, _TANH,
                   np.zeros((0, 1)) if weights is None else np.ascontiguousarray(weights, dtype=np.float64))


#: tanh(x / 2) tabulated for the search, linearly interpolated (error under 1e-6; the per-patch
#: search evaluates it some 20 million times a megapixel, libm's tanh took 30 ns a call)
TANH_STEPS, TANH_REACH = 128, 32.0
_TANH = np.tanh(0.5 * np.linspace(-TANH_REACH, TANH_REACH, int(2 * TANH_REACH * TANH_STEPS) + 1))
#: fast-math flags that keep infinities (a symbol at the edge of its feasible range has one)
_FAST = {"contract", "reassoc", "arcp", "afn"}


@numba.njit(cache=True, nogil=True, fastmath=_FAST, inline="always")
def _half_tanh(x, table):  # pragma: no cover - compiled
    t = min(max((x + TANH_REACH) * TANH_STEPS, 0.0), table.shape[0] - 2.0)
    i = int(t)
    return table[i] + (t - i) * (table[i + 1] - table[i])


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _bits_at(weights, upper, lower, log_scales, n, inverse_scale, offset, shift, table):  # pragma: no cover - compiled
    """The estimated bits of the first ``n`` symbols (as :class:`_CodeLength`, the reference), every
    log-scale index moved by ``offset`` and every mean by ``shift`` pixels."""
    levels = inverse_scale.shape[0]
    total, product = 0.0, 1.0
    for i in range(n):
        p = 0.0
        for k in range(weights.shape[1]):
            inv = inverse_scale[min(max(log_scales[i, k] + offset, 0), levels - 1)]
            p += weights[i, k] * (_half_tanh((upper[i, k] - shift) * inv, table)
                                  - _half_tanh((lower[i, k] - shift) * inv, table))
        product *= max(0.5 * p, 2.0**-30)
        if product < 1e-250:  # a logarithm every few symbols, not one each
            total -= np.log2(product)
            product = 1.0
    return total - np.log2(product)


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _cost(costs, d, lowest, weights, upper, lower, log_scales, n, inverse_scale, base, step, shift_step,
          table):  # pragma: no cover - compiled
    """The estimate at ``d`` (log-scale offset ``base + step * d``, mean shift ``shift_step * d``),
    computed once: ``costs[d - lowest]`` is negative until then."""
    if costs[d - lowest] < 0:
        costs[d - lowest] = _bits_at(weights, upper, lower, log_scales, n, inverse_scale, base + step * d,
                                     shift_step * d, table)
    return costs[d - lowest]


@numba.njit(cache=True, nogil=True, inline="always")
def _better(d, best, cost, best_cost):  # pragma: no cover - compiled
    """``d`` if its estimate beats the best's (a tie keeps the smaller move), else ``best``."""
    return d if cost < best_cost or (cost == best_cost and abs(d) < abs(best)) else best


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _weights_of(table, i, sharpness, out):  # pragma: no cover - compiled
    """The mixture weights of row ``i`` of ``table`` under ``sharpness`` into ``out`` ``[K]`` (as _CodeLength)."""
    K = out.shape[0]
    top = np.int64(table[i, 0])
    for k in range(1, K):
        top = max(top, np.int64(table[i, k]))
    norm = 0.0
    for k in range(K):
        out[k] = np.exp(-sharpened_gap(top - table[i, k], sharpness) / LOGIT_STEPS)
        norm += out[k]
    for k in range(K):
        out[k] /= norm


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _all_weights(table, sharpness):  # pragma: no cover - compiled
    out = np.empty((table.shape[0], table.shape[1] // 3))
    for i in range(table.shape[0]):
        _weights_of(table, i, sharpness, out[i])
    return out


def mixture_weights(table: np.ndarray, sharpness: int = SHARPNESS_STEPS) -> np.ndarray:
    """Every row's mixture weights ``[n, K]`` under ``sharpness``, as the search computes them (the
    mean search reads them once per channel, not once per source and sweep)."""
    return _all_weights(np.ascontiguousarray(table, dtype=np.int32), int(sharpness))


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _search(table, symbols, lo, hi, starts, index, moved_by, shifted_by, tau, inverse_scale, base, step, shift_step,
            lowest, highest, coarse, sharpness, tanh_table, given_weights):  # pragma: no cover - compiled
    groups, K = starts.shape[0] - 1, table.shape[1] // 3
    width = 2 * tau + 1
    most = 0
    for g in range(groups):
        most = max(most, starts[g + 1] - starts[g])
    weights = np.empty((most, K))
    upper = np.empty((most, K))
    lower = np.empty((most, K))
    log_scales = np.empty((most, K), dtype=np.int64)
    best_d = np.zeros(groups, dtype=np.int64)
    best_cost = np.zeros(groups)
    zero_cost = np.zeros(groups)
    costs = np.empty(highest - lowest + 1)
    for g in range(groups):
        a, n = starts[g], starts[g + 1] - starts[g]
        if n == 0:
            continue
        for j in range(n):  # what does not depend on the offset (as _CodeLength)
            i = index[a + j]
            if given_weights.shape[0]:
                for k in range(K):
                    weights[j, k] = given_weights[i, k]
            else:
                _weights_of(table, i, sharpness, weights[j])
            centre = symbols[i] * width
            shift = shifted_by[i] if shifted_by.shape[0] else 0
            for k in range(K):
                mu = (np.int64(table[i, K + k]) + shift) / MEAN_STEPS
                upper[j, k] = np.inf if symbols[i] >= hi[i] else centre + tau + 0.5 - mu
                lower[j, k] = -np.inf if symbols[i] <= lo[i] else centre - tau - 0.5 - mu
                log_scale = np.int64(table[i, 2 * K + k])
                if moved_by.shape[0]:
                    log_scale = min(max(log_scale + moved_by[i], 0), LOG_SCALE_LEVELS - 1)
                log_scales[j, k] = log_scale
        costs[:] = -1.0
        args = (weights, upper, lower, log_scales, n, inverse_scale, base, step, shift_step, tanh_table)
        _cost(costs, 0, lowest, *args)
        # coarse steps from 0 while the estimate falls, on the better side of 0 (the best is
        # mostly near 0: a pass over the whole range cost twice the evaluations for the same
        # choices); then around the vertex of the parabola through the best and its neighbours (two
        # evaluations fewer than halving steps, the same files on the validation split and samples)
        best = 0
        for d in (coarse, -coarse):
            if lowest <= d <= highest and _cost(costs, d, lowest, *args) < costs[best - lowest]:
                best = d
        while best != 0:
            d = best + coarse * (1 if best > 0 else -1)
            if d < lowest or d > highest or _cost(costs, d, lowest, *args) >= costs[best - lowest]:
                break
            best = d
        left, right = best - coarse, best + coarse
        if (coarse > 2 and lowest <= left and right <= highest and costs[left - lowest] >= 0
                and costs[right - lowest] >= 0):
            # the parabola through the best coarse step and its neighbours puts the minimum near its
            # vertex: look there and one step either side, then walk on in unit steps while it falls
            cl, cb, cr = costs[left - lowest], costs[best - lowest], costs[right - lowest]
            curve = cl - 2.0 * cb + cr
            centre = best
            if curve > 0:
                centre = best + int(np.floor(0.5 + 0.5 * coarse * (cl - cr) / curve))
                centre = min(max(centre, left + 1), right - 1)
            for d in (centre - 1, centre, centre + 1):
                best = _better(d, best, _cost(costs, d, lowest, *args), costs[best - lowest])
            for side in (-1, 1):
                while best != centre and (best - centre) * side > 0 and lowest <= best + side <= highest:
                    if not _cost(costs, best + side, lowest, *args) < costs[best - lowest]:
                        break
                    best += side
            stride = 0
        else:
            stride = coarse // 2
        while stride:  # else halving steps around the best
            for d in (best - stride, best + stride):
                if lowest <= d <= highest:
                    best = _better(d, best, _cost(costs, d, lowest, *args), costs[best - lowest])
            stride //= 2
        best_d[g] = best
        best_cost[g] = costs[best - lowest]
        zero_cost[g] = costs[-lowest]
    return best_d, best_cost, zero_cost


def _stable_order(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` of small non-negative integers (levels, classes, patches),
    as 16-bit keys: NumPy then sorts by radix instead of merging."""
    return np.argsort(keys.astype(np.int16) if keys.size and keys.max() < 2**15 else keys, kind="stable")
