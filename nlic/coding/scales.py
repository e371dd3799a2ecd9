"""Log-scale offsets: integers added to every component's log-scale index, per tile and channel,
in format 4 refined per 64x64 patch, in format 5 also per symbol class; and (format 6) mean
offsets, integers added to every component's mean per mean level of a few sources.

This module holds what encoder and decoder both derive for each symbol from what is decoded already
(its class, its mean sources and their levels, its phase) and how an offset moves its mixture;
:mod:`nlic.coding.search` makes the encoder's choices, :mod:`nlic.coding.scale_fields` stores them.

The network is sharper or blunter than a photo unlike its training crops deserves: on the held-out
photos the chosen offsets went from -1.5 to +0.75 natural-log units (sharper on smooth skies at
tau >= 1, blunter on a noisy sky at tau = 0) and saved 1.9 % of the file at tau = 0 and 3.2 % at
tau = 2 (real bytes, model 2529f03cbba0eda8).  The encoder estimates, on a fixed sample of the
tile's symbols, the code length under each candidate offset (float arithmetic on the integer
mixtures: only the encoder computes it, the file stores the choice), keeps the best, and stores it
as one signed byte per channel; both sides add it to the integer log-scale indices before the
tables (exact).

Format 4 refines the tile's offset per patch and channel by a delta of -8..7 steps of DELTA_STEP,
stored as a nibble (4 bits a patch and channel: 96 bytes a 512-pixel tile): photos change within a
tile (a sky above a rock face), and one offset per tile cannot follow.  On three held-out photos the
per-patch offsets cut the estimated code by a further 1.2-1.3 % at tau = 0 and 2, side bits included
(per 128-pixel region 0.9 %, per 256-pixel region 0.4 %).

Format 4 also stores a sharpness per tile and channel: the logit gaps between the mixture's
components times ``sharpness / 8`` (:func:`nlic.entropy.pmf.sharpened_gap`, integers).  At tau >= 1
the network's mixtures are too even on many held-out tiles: on the ten held-out photos about 40 %
of the tiles' channels take a factor of 1.25 to 8 at tau = 1, 2 and 5 (12 % at tau = 0).  The
files got 0.1-0.3 % smaller on the held-out photos (more on a few: 1.0-1.7 % at tau = 1, 2 on
three of them); softer mixtures (factors 1/2, 3/4) pay on a few tiles at tau = 0.

Format 5 adds an offset per tile, channel and symbol class, from two things both sides know
before the symbol: its activity, the causal neighbours' gradient ``|NE - N| + |N - NW| + |NW - W|``
(in bins, the channel's own reconstructed residuals, zero outside the patch, as the network reads
them) cut at ACTIVITY_LIMITS; and, for G and B, the surprise of the pixel's previous channel, how
far its decoded bin lay from the mean of its heaviest mixture component (cut at SURPRISE_LIMITS).
The network, trained on noisy camera photos, is too blunt where a photo is flat (a smooth bokeh:
four neighbours equal) and too sharp beside edges, and it sees R's value but not how unexpected
it was; a patch's offset cannot tell these symbols apart.  Estimated on held-out photos (offsets
fitted on half the sample, measured on the other half), activity alone saved 0.5-1.2 % at tau = 0
and 0.8-2.1 % at tau = 2, activity and surprise together 1.2-3.8 % and 1.2-2.8 %.  A class's
offset is stored only where it pays for its byte (a bit mask of the classes per channel).

Format 6 moves the means too: per tile, channel and mean source an offset (1/16 bin) per mean
level, where a level is how far, and on which side, a source lay from its prediction: for G and B
the previous channel's bin from its heaviest component's mean (B: also R's), for every channel its
own heaviest component's mean from the median (MED) prediction of its W, N and NW neighbours and
from the average of W and N.  The network, trained on noisy camera crops, reacts too strongly on
smooth held-out photos, both to R's value when it predicts G and B and to the texture around a
pixel: the offsets the encoder chooses mostly pull a mean back towards R's lead and towards the
simple predictions.  Real bytes on top of format 5, one process each, at tau = 0 / 2:
gcompris_heron -6.7 / -7.0 %, lxqt_cloud -12.6 / -9.8 %, ladybird_crop -4.2 / -6.1 %, a noisy
photo (tuxpaint_cliff) -0.6 / -1.8 %; the channel sources alone gave -2.0 / -3.0 % on
gcompris_heron, MED added to them -4.7 / -3.7 %, the average -0.2 / -0.4 % more (enl_peaks -2.0 %
at tau = 0).  Tried and left out (real bytes): finer levels (limits 1, 2, 4, 8, 16 or seven
limits: -0.1 to -0.3 % at tau = 0, nothing at tau = 2), a range of four bins instead of two (no
gain), W alone, N alone or the plane W + N - NW instead of MED (0.4-1.6 % larger), N as a third
predictor (-0.1 to -0.2 %), the neighbours' own prediction errors (an estimated -0.2 %), a
least-squares predictor fitted per tile and channel (six causal neighbours, and the current pixel's
and its W and N neighbours' earlier channels) as a third predictor: -0.74 % at tau = 0 and -0.64 %
at tau = 2 on the validation split before its coefficients' bytes (-0.02 to -2.8 % a photo), too
little for another format and the decoder's work.

Format 7 adds a fifth mean source for G and B: how far the channel's mean lies from its chroma
prediction, the pixel's decoded R plus the MED prediction of the channel's difference from R
(:func:`chroma_predictions`).  On smooth photos the noise of R, G and B is nearly the same, so the
difference planes are much smoother than the channels, and JPEG-XL's colour transforms live on
that: on gcompris_heron JPEG-XL codes G - R alone in 1.00 bit a pixel where nlic spent 1.19 on G
given R.  The source is searched after the other four, so a tile that gives it no offset is a
format 6 tile, byte for byte.  Real bytes on the validation split and the samples (14 photos):
-0.93 % at tau = 0 (every photo smaller, -0.13 to -4.6 %: tuxtype_kcas5 -4.6 %, gcompris_heron
-2.1 %), -0.21 % at tau = 2; `nlic bench` on the validation split -1.2 % at tau = 0 and -0.14 to
-0.37 % at tau = 1..5.  Tried and left out (real bytes, five held-out photos, tau = 0): B's
prediction from G instead of R (-0.8 % against -0.9 %), both as two sources (-0.24 % more), the
average of W and N on the difference plane instead of MED (+0.9 %), the chroma source in the
place of the W-N average (-0.8 % at tau = 0; with B's from G, +0.2 % at tau = 2), searching it
first (-0.03 %), and G's and B's activity classes measured on their difference planes (-0.35 to
-0.46 % at tau = 0, +0.1 to +0.35 % at tau = 2).

Format 9 adds a sixth mean source for every channel, how far the channel's mean lies from a
least-squares prediction fitted to the tile (:mod:`nlic.coding.least_squares`: ten causal
neighbours, and for G and B the pixel's earlier channels and their four nearest neighbours), and
cuts every source's distance finer and further (FINE_MEAN_LIMITS: 1, 2, 4, 8, 16 half bins).  A
channel stores its coefficients only where the source's offsets save more than the coefficients
cost.  An earlier try (six neighbours, searched after MED and the average, coarse levels, one
sweep) gave -0.74 % before the coefficients' bytes; with ten neighbours, the bias, the finer
levels and the sources searched twice (MEAN_SWEEPS), real bytes on the validation split and the
samples (14 photos) fell 1.66 % at tau = 0 and 0.52 % at tau = 2 against format 8 coded with the
same two sweeps (enl_peaks -7.4 % at tau = 0, no photo more than 0.03 % larger).  Format 9 also
has two error-feedback sources (LS_ERROR_SOURCE, NET_ERROR_SOURCE): how far the W and N neighbours
fell from their least-squares prediction and from the network's mean, summed; the decoder keeps
each decoded pixel's two errors in buffers its neighbours gather from.  A further -1.8 % at tau =
0 and -2.5 % at tau = 2 on the same photos.

Format 11 adds, at tau <= 2, a log-scale offset per tile, channel and pixel phase (the pixel's row and
column modulo 8; :func:`~nlic.coding.search.choose_phases`).  Six of the ten held-out photos once were JPEGs: the
horizontal differences of their chroma are 1.3-2.3 times the mean at every eighth column (the block
edges) and down to half of it inside them, a grid the network cannot see in a neighbourhood.  The
offsets are fitted on one half of the sample and kept where they pay on the other half (fitted and
judged on the same symbols, 64 offsets a channel looked better than they were and made smooth photos'
files larger).  Real bytes of the learned code on the validation split: -0.76 % at tau = 0
(gcompris_heron -1.95 %, tuxtype_kcas5 -2.98 %, photos that never were JPEGs +0.01 to +0.05 %), on
the samples -0.27 %; at tau = 1 -0.27 / -0.08 % and at tau = 2 -0.11 / -0.01 % on the validation split
/ the samples (PHASE_MIN_BITS, PHASE_MAX_TAU say where they are not searched).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nlic.coding import least_squares
from nlic.compiled import numba
from nlic.residual.integer import LOG_SCALE_LEVELS, MEAN_STEPS

#: symbol classes (format 5): the activity level is the number of limits below the neighbours'
#: gradient in bins (0: flat, ..., 5: above 15); the surprise level the number of limits, in half
#: bins, below the distance of the previous channel's bin from its heaviest component's mean (0 for
#: R); class = activity * SURPRISE_LEVELS + surprise
ACTIVITY_LIMITS = (0, 1, 3, 7, 15)
SURPRISE_LIMITS = (1, 3, 8)
SURPRISE_LEVELS = len(SURPRISE_LIMITS) + 1
SYMBOL_CLASSES = (len(ACTIVITY_LIMITS) + 1) * SURPRISE_LEVELS
#: the neighbours the gradient reads, as (row, column) offsets: W, N, NW, NE
ACTIVITY_TAPS = ((0, -1), (-1, 0), (-1, -1), (-1, 1))
#: format 6: a channel's means move by an offset per mean level of each of MEAN_SOURCES sources: the
#: surprise of the channel before it (G: R's; B: G's), of the one before that (B: R's), and the
#: deviation of its own mean from each of PREDICTORS (MED and the average of W and N, from its own
#: neighbours); a level cuts the source's signed distance at MEAN_LIMITS half bins on either side
#: (0 .. MEAN_LEVELS - 1, the middle one within half a bin); offsets in 1/MEAN_STEPS bin (the encoder's
#: search: :mod:`nlic.coding.search`); format 7 adds G's and B's chroma source last (CHROMA below)
CHANNEL_SOURCES = 2
MEAN_LIMITS = SURPRISE_LIMITS
#: format 9 cuts every source finer and wider (-0.4 % at tau = 0 on 14 held-out photos; the
#: least-squares source's disagreements with the network reach further than MED's)
FINE_MEAN_LIMITS = (1, 2, 4, 8, 16)
#: levels of a mean source, format 9's; formats 6 to 8 use the middle OLD_MEAN_LEVELS of them
#: (their limits padded with ones no distance reaches)
MEAN_LEVELS = 2 * len(FINE_MEAN_LIMITS) + 1
OLD_MEAN_LEVELS = 2 * len(MEAN_LIMITS) + 1
OLD_LEVELS = slice(len(FINE_MEAN_LIMITS) - len(MEAN_LIMITS), len(FINE_MEAN_LIMITS) + len(MEAN_LIMITS) + 1)
_NEVER = 2**40
#: format 11: an offset per tile, channel and pixel phase, a pixel's row and column within the
#: PHASE_PERIOD x PHASE_PERIOD grid (tiles and patches start on it).  Photos that once were JPEGs
#: keep the 8x8 block grid (and 4:2:0 chroma's 2x2 pairs): a pixel beside a block edge is rougher
#: than one inside, which no neighbourhood shows the network
PHASE_PERIOD = 8
PHASES = PHASE_PERIOD * PHASE_PERIOD
def apply(log_scales: np.ndarray, offset: int) -> np.ndarray:
    """Integer log-scale indices moved by ``offset`` steps, kept on the grid."""
    if offset == 0:
        return log_scales
    return np.clip(log_scales + offset, 0, LOG_SCALE_LEVELS - 1)


def phase_of(index: np.ndarray, size: int) -> np.ndarray:
    """The phase (0 .. PHASES - 1) of flat indices into ``[P, size, size]`` patches: the pixel's row
    and column within the PHASE_PERIOD grid, ``row % 8 * 8 + column % 8``."""
    pixel = np.asarray(index, dtype=np.int64) % (size * size)
    return (pixel // size % PHASE_PERIOD) * PHASE_PERIOD + pixel % size % PHASE_PERIOD


def mean_shift(levels: Sequence[np.ndarray | None], offsets: np.ndarray, width: int) -> np.ndarray | None:
    """Each symbol's shift of its means (1/MEAN_STEPS pixel) from its sources' mean ``levels``
    (None: a source it does not have) and their ``offsets`` ``[sources, MEAN_LEVELS]`` (None: no
    shift)."""
    if offsets is None:
        return None
    parts = [(levels[j], np.ascontiguousarray(row, dtype=np.int64)) for j, row in enumerate(offsets)
             if row.any() and j < len(levels) and levels[j] is not None]
    if not parts:
        return None
    out = np.zeros(len(parts[0][0]), dtype=np.int64)
    for lev, row in parts:
        _add_offsets(out, lev, row, width)
    return out


@numba.njit(cache=True, nogil=True)
def _add_offsets(out, levels, offsets, width):  # pragma: no cover - compiled
    for i in range(out.shape[0]):
        out[i] += offsets[levels[i]] * width


def heaviest_means(table: np.ndarray) -> np.ndarray:
    """The mean of each symbol's heaviest mixture component (the first of equals), 1/MEAN_STEPS
    pixel: ``table`` ``[n, 3K]`` integer mixtures."""
    return _heaviest_means(np.ascontiguousarray(table))


@numba.njit(cache=True, nogil=True)
def _heaviest_means(table):  # pragma: no cover - compiled
    out = np.empty(table.shape[0], dtype=np.int64)
    for i in range(table.shape[0]):
        out[i] = _heaviest_mean(table, i)
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _heaviest_mean(table, i):  # pragma: no cover - compiled
    """The mean of row ``i``'s heaviest component (the first of equals)."""
    K = table.shape[1] // 3
    top = 0
    for k in range(1, K):
        if table[i, k] > table[i, top]:
            top = k
    return table[i, K + top]


def median_predictions(west: np.ndarray, north: np.ndarray, north_west: np.ndarray) -> np.ndarray:
    """The median (MED, LOCO-I) predictor of each pixel from its W, N and NW neighbours (integers)."""
    low, high = np.minimum(west, north), np.maximum(west, north)
    return np.where(north_west >= high, low, np.where(north_west <= low, high, west + north - north_west))


def deviation(table: np.ndarray | None, prediction: np.ndarray, width: int,
              means: np.ndarray | None = None) -> np.ndarray:
    """How far each symbol's heaviest component's mean (of ``table``, or ``means``: its
    :func:`heaviest_means` computed already) lies from a ``prediction`` (pixels, the residuals the
    network reads), signed, in the units of :func:`surprise`."""
    return 2 * ((heaviest_means(table) if means is None else means) - MEAN_STEPS * prediction.astype(np.int64))


def context_predictions(context: np.ndarray) -> list[np.ndarray]:
    """Each of PREDICTORS, then the chroma prediction (:func:`chroma_predictions`), for every pixel
    of patches ``[P, c, S, S]`` of reconstructed residuals (as the network reads them), neighbours
    outside the patch zero (the decoder's border)."""
    return list(patch_context(context, 1)[1])


def chroma_predictions(context: np.ndarray) -> np.ndarray:
    """The chroma prediction of every pixel of patches ``[P, c, S, S]`` (format 7's last mean
    source): for G and B the pixel's R plus the MED prediction of the channel's difference from R
    (from the W, N and NW neighbours, zero outside the patch); zero for R and grey.  Smooth photos'
    noise is nearly the same in R, G and B, so the difference planes are smoother than the channels:
    on a held-out photo (gcompris_heron) MED on G - R misses G by 0.41 pixel on average, MED on G
    by 1.28."""
    r = np.asarray(context, dtype=np.int64)
    out = np.zeros_like(r)
    for c in range(1, r.shape[1]):
        d = r[:, c] - r[:, 0]
        west, north, north_west = (np.zeros_like(d) for _ in range(3))
        west[..., :, 1:], north[..., 1:, :], north_west[..., 1:, 1:] = d[..., :, :-1], d[..., :-1, :], d[..., :-1, :-1]
        out[:, c] = r[:, 0] + median_predictions(west, north, north_west)
    return out


def patch_context(context: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`activity_levels` and :func:`context_predictions` of patches ``[P, c, S, S]`` in one
    compiled pass (the encoder's form; the tests hold it to :func:`median_predictions`,
    :func:`average_predictions` on shifted planes and :func:`chroma_predictions`): ``[P, c, S, S]``
    and ``[len(PREDICTORS) + 1, P, c, S, S]``."""
    return _patch_context(np.ascontiguousarray(context, dtype=np.int64), width,
                          np.asarray(ACTIVITY_LIMITS, dtype=np.int64))


@numba.njit(cache=True, nogil=True, inline="always")
def _median(west, north, north_west):  # pragma: no cover - compiled
    """:func:`median_predictions` of one pixel."""
    low, high = min(west, north), max(west, north)
    return low if north_west >= high else high if north_west <= low else west + north - north_west


@numba.njit(cache=True, nogil=True, inline="always")
def _activity(west, north, north_west, north_east, width, limits):  # pragma: no cover - compiled
    """The activity level of one pixel: how many ``limits`` lie below its neighbours' gradient in bins."""
    g = (abs(north_east - north) + abs(north - north_west) + abs(north_west - west)) // width
    k = 0
    while k < limits.shape[0] and limits[k] < g:
        k += 1
    return k


@numba.njit(cache=True, nogil=True)
def _patch_context(r, width, limits):  # pragma: no cover - compiled
    P, C, S, _ = r.shape
    activity = np.empty((P, C, S, S), dtype=np.int64)
    predictions = np.empty((3, P, C, S, S), dtype=np.int64)
    for p in range(P):
        for c in range(C):
            for i in range(S):
                for j in range(S):
                    west = r[p, c, i, j - 1] if j > 0 else 0
                    north = r[p, c, i - 1, j] if i > 0 else 0
                    north_west = r[p, c, i - 1, j - 1] if i > 0 and j > 0 else 0
                    north_east = r[p, c, i - 1, j + 1] if i > 0 and j < S - 1 else 0
                    activity[p, c, i, j] = _activity(west, north, north_west, north_east, width, limits)
                    predictions[0, p, c, i, j] = _median(west, north, north_west)
                    predictions[1, p, c, i, j] = (west + north) >> 1  # average_predictions
                    if c == 0:
                        predictions[2, p, c, i, j] = 0
                    else:  # chroma_predictions: R plus MED of the difference from R
                        red_west = r[p, 0, i, j - 1] if j > 0 else 0
                        red_north = r[p, 0, i - 1, j] if i > 0 else 0
                        red_north_west = r[p, 0, i - 1, j - 1] if i > 0 and j > 0 else 0
                        predictions[2, p, c, i, j] = r[p, 0, i, j] + _median(
                            west - red_west, north - red_north, north_west - red_north_west)
    return activity, predictions


def gathered_predictions(taps: np.ndarray, tap_index: Sequence[int], channels: int) -> list[np.ndarray]:
    """:func:`context_predictions` of the decoder's rows ``[n, taps*3]`` (as :func:`gathered_levels`):
    each ``[n, channels]``."""
    west, north, north_west = (taps[:, 3 * t : 3 * t + channels].astype(np.int64) for t in tap_index[:3])
    return [predict(west, north, north_west) for predict in PREDICTORS]


def gathered_chroma(taps: np.ndarray, tap_index: Sequence[int], channels: int, red: np.ndarray) -> np.ndarray:
    """:func:`chroma_predictions` of the decoder's rows ``[n, taps*3]`` (as :func:`gathered_levels`)
    once their R ``red`` ``[n]`` is decoded: ``[n, channels]``."""
    west, north, north_west = (taps[:, 3 * t : 3 * t + channels].astype(np.int64) for t in tap_index[:3])
    out = np.zeros((taps.shape[0], channels), dtype=np.int64)
    for c in range(1, channels):
        out[:, c] = red.astype(np.int64) + median_predictions(
            *(plane[:, c] - plane[:, 0] for plane in (west, north, north_west)))
    return out


def add_red(predictions: np.ndarray, red: np.ndarray) -> None:
    """Complete the chroma plane of :func:`gathered_context`'s ``predictions`` (in place) with the
    wavefront's decoded R ``red`` ``[n]`` (context values): the decoder knows a pixel's R only after
    its R step, and the chroma prediction of its G and B starts from it."""
    predictions[CHROMA, :, 1:] += red.astype(np.int64)[:, None]


def average_predictions(west: np.ndarray, north: np.ndarray, north_west: np.ndarray) -> np.ndarray:
    """The mean of the W and N neighbours, rounded down (integers)."""
    return (west + north) >> 1


#: the simple predictors whose distance from the network's mean select format 6's last mean sources
PREDICTORS = (median_predictions, average_predictions)
#: format 7 adds a last mean source for G and B (R has none): the deviation of the channel's mean
#: from its chroma prediction, the pixel's decoded R plus the MED prediction of the channel's
#: difference from R (:func:`chroma_predictions`); CHROMA is its plane among the predictions
CHROMA = len(PREDICTORS)
CHROMA_SOURCE = CHANNEL_SOURCES + CHROMA
#: format 9 adds a last mean source for every channel: the deviation of the channel's mean from
#: its least-squares prediction (:mod:`nlic.coding.least_squares`)
LS_SOURCE = CHROMA_SOURCE + 1
#: and two error-feedback sources: how far the pixel's W and N neighbours fell from their
#: least-squares prediction, and from the network's mean (its heaviest component's, before any mean
#: offset), summed (:func:`feedback`).  A photo's local bias, a gradient the network reads too
#: weakly or a texture it overshoots, shows in its neighbours' errors before it shows in the pixel
#: (JPEG-LS and CALIC correct their predictions by such errors, JPEG-XL's self-correcting predictor
#: weighs its sub-predictors by them)
LS_ERROR_SOURCE = LS_SOURCE + 1
NET_ERROR_SOURCE = LS_ERROR_SOURCE + 1
MEAN_SOURCES = NET_ERROR_SOURCE + 1
#: the sources that read the least-squares prediction (a channel stores its coefficients when one
#: of them has offsets)
LS_SOURCES = (LS_SOURCE, LS_ERROR_SOURCE)
#: the neighbours whose errors the feedback sources sum (W, N; with NW and NE too the files were
#: 0.9 % (tau = 0) and 1.5 % (tau = 2) larger), and the factor on the sum before it is cut into
#: levels as a :func:`surprise` (a level's limits then fall at a quarter, half, one, two and four
#: bins of summed error; factors 2 and 8 gave files 0.03-0.1 % larger)
FEEDBACK_TAPS = ((0, -1), (-1, 0))
FEEDBACK_SCALE = 4
#: the sources a format 6 tile stores (all but the chroma and least-squares sources), format 7's
FORMAT6_SOURCES = CHROMA_SOURCE
FORMAT7_SOURCES = LS_SOURCE
_LS_SHIFT = least_squares.SHIFT


def surprise(table: np.ndarray, bins: np.ndarray, width: int, means: np.ndarray | None = None) -> np.ndarray:
    """How far each symbol's previous channel fell from the mean of its heaviest mixture component,
    signed, in half bins times ``MEAN_STEPS * width``: ``table`` ``[n, 3K]`` its integer mixtures
    (or ``means``: their :func:`heaviest_means` computed already), ``bins`` its decoded bins;
    integers only (means in 1/MEAN_STEPS pixel), so both sides agree."""
    return 2 * (MEAN_STEPS * width * bins.astype(np.int64) - (heaviest_means(table) if means is None else means))


def surprise_levels(table: np.ndarray, bins: np.ndarray, width: int, signed: bool = False,
                    fine: bool = False) -> np.ndarray:
    """The surprise level of each symbol's previous channel (:func:`surprise` cut at
    SURPRISE_LIMITS half bins); ``signed``: the mean level instead (cut at MEAN_LIMITS, or
    ``fine``: FINE_MEAN_LIMITS, on the side the bin fell: 0 .. MEAN_LEVELS - 1, the middle one
    ``len(FINE_MEAN_LIMITS)`` within half a bin; formats 6 to 8 reach only their middle
    OLD_MEAN_LEVELS)."""
    return distance_levels(surprise(table, bins, width), width, signed, fine)


def mean_limits(width: int, fine: bool) -> np.ndarray:
    """A mean level's limits (distances, in the units of :func:`surprise`): format 9's
    FINE_MEAN_LIMITS, or MEAN_LIMITS padded to as many with limits no distance reaches."""
    limits = FINE_MEAN_LIMITS if fine else MEAN_LIMITS + (_NEVER,) * (len(FINE_MEAN_LIMITS) - len(MEAN_LIMITS))
    return np.asarray(limits, dtype=np.int64) * (MEAN_STEPS * width)


def tile_mean_limits(fine: Sequence[bool], width: int) -> np.ndarray:
    """:func:`mean_limits` of each tile ``[T, len(FINE_MEAN_LIMITS)]`` (``fine``: which tiles are
    format 9's): what :func:`symbol_adjustments` cuts each symbol's sources at."""
    return np.stack([mean_limits(width, bool(f)) for f in fine])


def distance_levels(distance: np.ndarray, width: int, signed: bool = False, fine: bool = False) -> np.ndarray:
    """:func:`surprise_levels` of distances :func:`surprise` computed: how many limits lie below
    ``|distance|`` (signed: on the side of its sign, from ``len(FINE_MEAN_LIMITS)``)."""
    limits = (mean_limits(width, fine) if signed
              else np.asarray(SURPRISE_LIMITS, dtype=np.int64) * (MEAN_STEPS * width))
    return _distance_levels(np.ascontiguousarray(distance, dtype=np.int64), limits, signed)


@numba.njit(cache=True, nogil=True)
def _distance_levels(distance, limits, signed):  # pragma: no cover - compiled
    out = np.empty(distance.shape[0], dtype=np.int64)
    for i in range(distance.shape[0]):
        out[i] = _level(distance[i], limits, signed)
    return out


def symbol_classes(activity: np.ndarray, previous: tuple[np.ndarray, np.ndarray] | None, width: int,
                   distance: np.ndarray | None = None) -> np.ndarray:
    """Class of each symbol of a channel: its activity level and (``previous``: the previous
    channel's mixtures and bins, or ``distance``: their :func:`surprise`; neither for the first
    channel) the surprise level."""
    if distance is None and previous is not None:
        distance = surprise(*previous, width)
    return activity * SURPRISE_LEVELS + (0 if distance is None else distance_levels(distance, width))


def shifted(table: np.ndarray, shift: np.ndarray | None) -> np.ndarray:
    """Integer mixtures ``[n, 3K]`` with every mean moved by its symbol's ``shift`` (1/MEAN_STEPS
    pixel, :func:`mean_shift`): what the coder does with format 6's mean offsets (a copy; ``table``
    itself for no shift).  The definition the searches' ``shifted_by`` follows (they read in place)."""
    if shift is None:
        return table
    K = table.shape[1] // 3
    out = np.array(table)
    out[:, K : 2 * K] += shift.astype(out.dtype)[:, None]
    return out


def moved(table: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Integer mixtures ``[n, 3K]`` with ``offset`` ``[n]`` added to their log-scale indices (on the
    grid): what a per-symbol offset does in the coder (:func:`nlic.entropy.pmf.plan_group`).  The
    definition the searches' ``moved_by`` follows (they read in place)."""
    K = table.shape[1] // 3
    out = np.array(table, dtype=np.int64)
    out[:, 2 * K :] = np.clip(out[:, 2 * K :] + np.asarray(offset)[:, None], 0, LOG_SCALE_LEVELS - 1)
    return out


def activity_levels(context: np.ndarray, width: int) -> np.ndarray:
    """The activity level of every pixel of patches ``[P, c, S, S]`` of reconstructed residuals
    (integers, as the network reads them; ``width``: the bin width): its W, N, NW and NE neighbours'
    gradient in bins, neighbours outside the patch zero (the decoder's zero border)."""
    return patch_context(context, width)[0]


def gathered_levels(taps: np.ndarray, tap_index: Sequence[int], channels: int, width: int) -> np.ndarray:
    """:func:`activity_levels` of the decoder's rows ``[n, taps*3]`` (gathered residuals in (tap,
    rgb) order; ``tap_index``: where W, N, NW, NE are among the taps): ``[n, channels]``."""
    west, north, north_west, north_east = (
        taps[:, 3 * t : 3 * t + channels].astype(np.int64) for t in tap_index)
    gradient = (np.abs(north_east - north) + np.abs(north - north_west) + np.abs(north_west - west)) // width
    return np.searchsorted(np.asarray(ACTIVITY_LIMITS), gradient, side="left")


def gathered_context(taps: np.ndarray, tap_index: Sequence[int], channels: int,
                     width: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`gathered_levels` and :func:`gathered_predictions` of a wavefront in one compiled pass
    (the decoder's form; the tests hold it to those): activity ``[n, channels]`` and the predictions
    ``[len(PREDICTORS) + 1, n, channels]``, whose chroma plane holds only the MED prediction of the
    difference from R until :func:`add_red` adds the pixels' R."""
    return _gathered_context(taps, np.asarray(tap_index, dtype=np.int64), channels, width,
                             np.asarray(ACTIVITY_LIMITS, dtype=np.int64))


@numba.njit(cache=True, nogil=True)
def _gathered_context(taps, tap_index, channels, width, limits):  # pragma: no cover - compiled
    n = taps.shape[0]
    activity = np.empty((n, channels), dtype=np.int64)
    predictions = np.empty((3, n, channels), dtype=np.int64)
    tw, tn, tnw, tne = 3 * tap_index[0], 3 * tap_index[1], 3 * tap_index[2], 3 * tap_index[3]
    for i in range(n):
        for c in range(channels):
            west, north = np.int64(taps[i, tw + c]), np.int64(taps[i, tn + c])
            north_west, north_east = np.int64(taps[i, tnw + c]), np.int64(taps[i, tne + c])
            activity[i, c] = _activity(west, north, north_west, north_east, width, limits)
            predictions[0, i, c] = _median(west, north, north_west)
            predictions[1, i, c] = (west + north) >> 1  # average_predictions
            predictions[2, i, c] = 0 if c == 0 else _median(  # (add_red adds R)
                west - np.int64(taps[i, tw]), north - np.int64(taps[i, tn]), north_west - np.int64(taps[i, tnw]))
    return activity, predictions


def errors(context: np.ndarray, prediction: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each pixel's error (1/MEAN_STEPS pixel) from a ``prediction`` ``[P, S, S]`` (1/MEAN_STEPS
    pixel) of its reconstructed residual ``context`` ``[P, S, S]``; zero where not ``valid`` (the
    decoder never fills those)."""
    return (MEAN_STEPS * np.asarray(context, dtype=np.int64) - prediction) * valid


def feedback(error: np.ndarray) -> np.ndarray:
    """The error-feedback distance of every pixel of planes ``[P, S, S]`` of :func:`errors`:
    FEEDBACK_SCALE times the sum of its FEEDBACK_TAPS neighbours' errors, zero outside the patch
    (the encoder's form of the decoder's ``_ErrorBuffer.feedback``)."""
    out = np.zeros_like(error)
    S = error.shape[-1]
    for dy, dx in FEEDBACK_TAPS:  # out[i, j] += error[i + dy, j + dx] where that lies in the patch
        rows, cols = slice(max(-dy, 0), S - max(dy, 0)), slice(max(-dx, 0), S - max(dx, 0))
        out[:, rows, cols] += error[:, max(dy, 0) : S + min(dy, 0), max(dx, 0) : S + min(dx, 0)]
    return FEEDBACK_SCALE * out


def symbol_adjustments(table: np.ndarray, c: int, base: np.ndarray, tile: np.ndarray, activity: np.ndarray | None,
                       distances: Sequence[np.ndarray], predictions: np.ndarray | None, class_offsets: np.ndarray,
                       mean_offsets: np.ndarray, width: int, limits: np.ndarray | None = None,
                       sums: np.ndarray | None = None,
                       feedbacks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The decoder's per-symbol offsets of channel ``c`` of a wavefront in one compiled pass: each
    symbol's log-scale offset (``base`` plus its tile's offset of its :func:`symbol_classes` class;
    ``activity`` None: no classes), its :func:`mean_shift` (None without ``predictions``: no mean
    offsets) and its :func:`heaviest_means` (for the next channels' :func:`surprise`).

    ``tile`` ``[n]``: each symbol's tile, whose ``class_offsets`` ``[T, SYMBOL_CLASSES]`` and
    ``mean_offsets`` ``[T, MEAN_SOURCES, MEAN_LEVELS]`` (zeros: none) apply, cut at its ``limits``
    (:func:`tile_mean_limits`, computed once per group of tiles; None: formats 6 to 8's for every
    tile); ``distances``: the earlier
    channels' :func:`surprise`; ``sums``: the least-squares sums ``[n, c]`` of
    :func:`least_squares.gathered` (None: no tile has the source); ``feedbacks``: the
    :func:`feedback` of the least-squares and the network's errors ``[2, n, c]`` (None: no
    format 9 tile).  The same integers as the step-by-step definitions."""
    empty = np.zeros(0, dtype=np.int64)
    previous = [np.ascontiguousarray(distances[c - 1 - j], dtype=np.int64) if c > j else empty
                for j in range(CHANNEL_SOURCES)]
    scale = np.asarray(SURPRISE_LIMITS, dtype=np.int64) * (MEAN_STEPS * width)
    signed = tile_mean_limits([False] * mean_offsets.shape[0], width) if limits is None else limits
    offset, shift, heaviest = _symbol_adjustments(
        np.ascontiguousarray(table), c, np.ascontiguousarray(base, dtype=np.int64), tile,
        empty.reshape(0, 0) if activity is None else activity, previous[0], previous[1],
        np.zeros((0, 0, 0), dtype=np.int64) if predictions is None else predictions,
        np.ascontiguousarray(class_offsets, dtype=np.int64), np.ascontiguousarray(mean_offsets, dtype=np.int64),
        width, scale, signed, activity is not None, predictions is not None,
        empty.reshape(0, 0) if sums is None else sums, sums is not None,
        empty.reshape(0, 0, 0) if feedbacks is None else np.ascontiguousarray(feedbacks, dtype=np.int64),
        feedbacks is not None)
    return offset, (shift if predictions is not None else None), heaviest


@numba.njit(cache=True, nogil=True, inline="always")
def _level(d, limits, signed):  # pragma: no cover - compiled
    """:func:`distance_levels` of one distance."""
    level = 0
    while level < limits.shape[0] and limits[level] < abs(d):
        level += 1
    return (limits.shape[0] + (level if d > 0 else -level)) if signed else level


@numba.njit(cache=True, nogil=True)
def _symbol_adjustments(table, c, base, tile, activity, previous1, previous2, predictions, class_offsets, mean_offsets,
                        width, scale_limits, signed_limits, by_class, by_mean, sums,
                        by_least_squares, feedbacks, by_feedback):  # pragma: no cover - compiled
    n = table.shape[0]
    offset = np.empty(n, dtype=np.int64)
    shift = np.zeros(n, dtype=np.int64)
    heaviest = np.empty(n, dtype=np.int64)
    for i in range(n):
        heaviest[i] = _heaviest_mean(table, i)
        t = tile[i]
        offset[i] = base[i]
        if by_class:
            cls = activity[i, c] * SURPRISE_LEVELS + (_level(previous1[i], scale_limits, False) if c > 0 else 0)
            offset[i] += class_offsets[t, cls]
        if by_mean:
            limits = signed_limits[t]
            s = 0
            if c > 0:
                s += mean_offsets[t, 0, _level(previous1[i], limits, True)]
            if c > 1:
                s += mean_offsets[t, 1, _level(previous2[i], limits, True)]
            for q in range(predictions.shape[0] if c > 0 else CHROMA):  # (R has no chroma source)
                d = 2 * (heaviest[i] - MEAN_STEPS * predictions[q, i, c])
                s += mean_offsets[t, CHANNEL_SOURCES + q, _level(d, limits, True)]
            if by_least_squares:
                d = 2 * (heaviest[i] - (sums[i, c] >> _LS_SHIFT))
                s += mean_offsets[t, LS_SOURCE, _level(d, limits, True)]
            if by_feedback:
                s += mean_offsets[t, LS_ERROR_SOURCE, _level(feedbacks[0, i, c], limits, True)]
                s += mean_offsets[t, NET_ERROR_SOURCE, _level(feedbacks[1, i, c], limits, True)]
            shift[i] = s * width
    return offset, shift, heaviest
