"""Log-scale offsets: integers added to every component's log-scale index, per tile and channel,
in format 4 refined per 64x64 patch, in format 5 also per symbol class; and (format 6) mean
offsets, integers added to every component's mean per mean level of a few sources.

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
column modulo 8; :func:`choose_phases`).  Six of the ten held-out photos once were JPEGs: the
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial

import numpy as np

from nlic.coding import least_squares
from nlic.compiled import numba
from nlic.entropy.pmf import SHARPNESS_STEPS, sharpened_gap
from nlic.errors import BitstreamError
from nlic.residual.integer import LOG_SCALE_LEVELS, LOG_SCALE_MIN, LOG_SCALE_STEPS, LOGIT_STEPS, MEAN_STEPS

#: offsets searched, in log-scale grid steps (1/16 natural-log unit): -2 .. +1, first in COARSE
#: steps from 0 while the estimate falls, then around the vertex of a parabola through the best and
#: its neighbours (the estimate is smooth in the offset)
LOWEST, HIGHEST, COARSE = -32, 16, 4
#: symbols per channel the choice is estimated on (a fixed, evenly spaced sample)
SAMPLES = 4096
#: an offset is kept only when it saves at least this share of the channel's estimated bits
MIN_GAIN = 0.002
#: per-patch deltas (format 4): in steps of DELTA_STEP grid steps, a nibble each
DELTA_STEP, DELTA_MIN, DELTA_MAX = 2, -8, 7
#: symbols per patch and channel the deltas are estimated on (evenly spaced in decoding order)
PATCH_SAMPLES = 1024
#: sharpness values searched (format 4), in 1/SHARPNESS_STEPS: logit gaps times 1/2 .. 8
SHARPNESS = (4, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64)
#: symbol classes (format 5): the activity level is the number of limits below the neighbours'
#: gradient in bins (0: flat, ..., 5: above 15); the surprise level the number of limits, in half
#: bins, below the distance of the previous channel's bin from its heaviest component's mean (0 for
#: R); class = activity * SURPRISE_LEVELS + surprise
ACTIVITY_LIMITS = (0, 1, 3, 7, 15)
SURPRISE_LIMITS = (1, 3, 8)
SURPRISE_LEVELS = len(SURPRISE_LIMITS) + 1
SYMBOL_CLASSES = (len(ACTIVITY_LIMITS) + 1) * SURPRISE_LEVELS
#: a class's offset is stored when its estimated saving (scaled from the sample to the tile) passes
#: the byte it costs
CLASS_MIN_BITS = 8.0
#: the neighbours the gradient reads, as (row, column) offsets: W, N, NW, NE
ACTIVITY_TAPS = ((0, -1), (-1, 0), (-1, -1), (-1, 1))
#: format 6: a channel's means move by an offset per mean level of each of MEAN_SOURCES sources: the
#: surprise of the channel before it (G: R's; B: G's), of the one before that (B: R's), and the
#: deviation of its own mean from each of PREDICTORS (MED and the average of W and N, from its own
#: neighbours); a level cuts the source's signed distance at MEAN_LIMITS half bins on either side
#: (0 .. MEAN_LEVELS - 1, the middle one within half a bin); offsets in 1/MEAN_STEPS bin, searched
#: over MEAN_LOWEST .. MEAN_HIGHEST (two bins either way) in coarse steps then unit steps near the best, one
#: source after the other, MEAN_SWEEPS times; format 7 adds G's and B's chroma source last (CHROMA below)
CHANNEL_SOURCES = 2
MEAN_LIMITS = SURPRISE_LIMITS
#: format 9 cuts every source finer and wider (-0.4 % at tau = 0 on 14 held-out photos; the
#: least-squares source's disagreements with the network reach further than MED's)
FINE_MEAN_LIMITS = (1, 2, 4, 8, 16)
#: levels of a mean source, format 9's; formats 6 to 8 use the middle OLD_MEAN_LEVELS of them
#: (their limits padded with ones no distance reaches)
MEAN_LEVELS = 2 * len(FINE_MEAN_LIMITS) + 1
OLD_MEAN_LEVELS = 2 * len(MEAN_LIMITS) + 1
_OLD_LEVELS = slice(len(FINE_MEAN_LIMITS) - len(MEAN_LIMITS), len(FINE_MEAN_LIMITS) + len(MEAN_LIMITS) + 1)
_NEVER = 2**40
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
#: format 11: an offset per tile, channel and pixel phase, a pixel's row and column within the
#: PHASE_PERIOD x PHASE_PERIOD grid (tiles and patches start on it).  Photos that once were JPEGs
#: keep the 8x8 block grid (and 4:2:0 chroma's 2x2 pairs): a pixel beside a block edge is rougher
#: than one inside, which no neighbourhood shows the network
PHASE_PERIOD = 8
PHASES = PHASE_PERIOD * PHASE_PERIOD
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


@dataclass
class ScaleChoice:
    """A tile's log-scale offsets: the tile's per channel, the per-patch deltas ``[P, c]`` (None:
    none, a format 3 tile), each channel's sharpness (format 4; None: neutral) and the offsets per
    symbol class (format 5; None: none)."""

    tile: list[int]
    deltas: np.ndarray | None
    sharpness: list[int] | None = None
    classes: np.ndarray | None = None  # [c, SYMBOL_CLASSES] offsets per symbol class (format 5)
    means: np.ndarray | None = None  # [c, MEAN_SOURCES, MEAN_LEVELS] mean offsets (formats 6 to 9)
    #: format 9: the finer mean levels and each channel's least-squares coefficients ``[c,
    #: least_squares.MOST_TERMS]`` (stored for the channels whose source has offsets)
    fine: bool = False
    least_squares: np.ndarray | None = None
    #: format 11 (a format 9 choice only): the offsets per pixel phase ``[c, PHASES]`` (None: none)
    phases: np.ndarray | None = None

    @property
    def chroma(self) -> bool:
        """Whether the mean offsets use the chroma source (a format 7 tile; else format 6)."""
        return self.means is not None and bool(self.means[:, CHROMA_SOURCE].any())

    def channel_sharpness(self) -> list[int]:
        return self.sharpness or [SHARPNESS_STEPS] * len(self.tile)

    def per_patch(self, patches: int) -> np.ndarray:
        """Every patch's offsets ``[patches, c]``."""
        deltas = np.zeros((patches, len(self.tile)), dtype=np.int64) if self.deltas is None else self.deltas
        return patch_offsets(self.tile, deltas)

    def pack(self, every_source: bool = False, grey_red: bool = False) -> bytes:
        """The tile chunk's scales field (format 3 without deltas, format 4 with them, format 5 with
        class offsets too, format 6 with mean offsets after those, format 7 with the chroma source's
        among them; ``every_source``: format 8's, format 7's layout even without offsets; a
        :attr:`fine` choice: format 9's, whose ``grey_red`` flag says R's mixtures are the grey
        heads'; with :attr:`phases`, format 11's: format 9's, then the phase offsets as
        :func:`pack_classes`)."""
        channels = len(self.tile)
        if self.deltas is None:
            return pack(self.tile)
        field = pack_patches(self.tile, self.channel_sharpness(), self.deltas)
        classes = np.zeros((channels, SYMBOL_CLASSES)) if self.classes is None else self.classes
        means = np.zeros((channels, MEAN_SOURCES, MEAN_LEVELS)) if self.means is None else self.means
        if self.fine:
            used = [bool(means[c, LS_SOURCES].any()) for c in range(channels)]
            coefficients = (np.zeros((channels, least_squares.MOST_TERMS), dtype=np.int64)
                            if self.least_squares is None else self.least_squares)
            phases = b"" if self.phases is None else _pack_masked(self.phases, PHASES)
            return (field + pack_classes(classes) + _pack_masked(means.reshape(-1, MEAN_LEVELS), MEAN_LEVELS)
                    + bytes([int(grey_red)]) + least_squares.pack(coefficients, used) + phases)
        if self.classes is None and self.means is None and not every_source:
            return field
        if self.means is None and not every_source:
            return field + pack_classes(classes)
        return field + pack_classes(classes) + pack_means(means[:, :FORMAT7_SOURCES] if self.chroma or every_source
                                                          else means[:, :FORMAT6_SOURCES])


def apply(log_scales: np.ndarray, offset: int) -> np.ndarray:
    """Integer log-scale indices moved by ``offset`` steps, kept on the grid."""
    if offset == 0:
        return log_scales
    return np.clip(log_scales + offset, 0, LOG_SCALE_LEVELS - 1)


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
    :func:`mean_shift`, None: none).  A class keeps 0 unless its move saves more than
    CLASS_MIN_BITS in the tile (the byte that stores it)."""
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


def phase_of(index: np.ndarray, size: int) -> np.ndarray:
    """The phase (0 .. PHASES - 1) of flat indices into ``[P, size, size]`` patches: the pixel's row
    and column within the PHASE_PERIOD grid, ``row % 8 * 8 + column % 8``."""
    pixel = np.asarray(index, dtype=np.int64) % (size * size)
    return (pixel // size % PHASE_PERIOD) * PHASE_PERIOD + pixel % size % PHASE_PERIOD


@dataclass
class PhaseSample:
    """A sample of a tile's symbols as :func:`choose_phases` reads them, per channel: mixtures
    ``[n, 3K]``, bins, feasible bins, offsets (the patch's and class's) and mean shifts (None:
    none); and every symbol's :func:`phase_of`."""

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
    :func:`moved` and :func:`shifted` do.  Read in place: copying the reordered, moved and shifted
    tables cost the encoder about as much as the searches on them.  ``weights``: the table's mixture
    weights under ``sharpness`` (:func:`mixture_weights`; None: computed here)."""
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


def patch_offsets(tile_offsets: list[int], deltas: np.ndarray) -> np.ndarray:
    """Every patch's offsets ``[P, c]``: the tile's plus its deltas."""
    return np.asarray(tile_offsets, dtype=np.int64)[None, :] + DELTA_STEP * deltas.astype(np.int64)


def pack(offsets: list[int]) -> bytes:
    """One signed byte per channel; empty when every offset is zero."""
    return b"" if not any(offsets) else np.asarray(offsets, dtype=np.int8).tobytes()


def unpack(data: bytes, channels: int) -> list[int]:
    if not data:
        return [0] * channels
    if len(data) != channels:
        raise BitstreamError("file is corrupt (log-scale offsets do not match the channels)")
    return [int(v) for v in np.frombuffer(data, dtype=np.int8)]


def pack_patches(tile_offsets: list[int], sharpness: list[int], deltas: np.ndarray) -> bytes:
    """Format 4: one signed byte per channel (the tile's offsets), one byte per channel (its
    sharpness), then the deltas ``[P, c]`` (patch-major) as nibbles, two's complement, the first of
    each pair in the high half."""
    nibbles = (deltas.reshape(-1).astype(np.int64) & 0xF).tolist()
    if len(nibbles) % 2:
        nibbles.append(0)
    packed = bytes((a << 4) | b for a, b in zip(nibbles[::2], nibbles[1::2]))
    return (np.asarray(tile_offsets, dtype=np.int8).tobytes() + np.asarray(sharpness, dtype=np.uint8).tobytes()
            + packed)


def _pack_masked(offsets: np.ndarray, count: int) -> bytes:
    """Per row of ``offsets`` ``[c, count]``: a bit mask of the entries that are set (little-endian
    bits, ``ceil(count / 8)`` bytes), then one signed byte per such entry."""
    out = b""
    for row in np.asarray(offsets, dtype=np.int64):
        mask = sum(1 << k for k in range(count) if row[k])
        out += mask.to_bytes(-(-count // 8), "little") + row[row != 0].astype(np.int8).tobytes()
    return out


def _unpack_masked(data: bytes, at: int, channels: int, count: int, what: str) -> tuple[np.ndarray, int]:
    """Inverse of :func:`_pack_masked` from ``data[at:]``: the offsets and where they end."""
    mask_bytes = -(-count // 8)
    out = np.zeros((channels, count), dtype=np.int64)
    for c in range(channels):
        mask = int.from_bytes(data[at : at + mask_bytes], "little")
        which = [k for k in range(count) if mask >> k & 1]
        values = data[at + mask_bytes : at + mask_bytes + len(which)]
        if len(data) < at + mask_bytes or len(values) != len(which) or mask >> count:
            raise BitstreamError(f"file is corrupt ({what} do not match the tile)")
        out[c, which] = np.frombuffer(values, dtype=np.int8)
        at += mask_bytes + len(which)
    return out, at


def pack_classes(offsets: np.ndarray) -> bytes:
    """Format 5's class offsets ``[c, SYMBOL_CLASSES]``: per channel a bit mask of the classes
    that have one (little-endian bits), then one signed byte per such class."""
    return _pack_masked(offsets, SYMBOL_CLASSES)


def pack_means(offsets: np.ndarray) -> bytes:
    """Formats 6 to 8's mean offsets ``[c, sources, MEAN_LEVELS]`` (format 6: FORMAT6_SOURCES,
    formats 7, 8: FORMAT7_SOURCES), their middle OLD_MEAN_LEVELS as :func:`pack_classes` (per
    channel and source)."""
    offsets = np.asarray(offsets)
    if offsets[..., :_OLD_LEVELS.start].any() or offsets[..., _OLD_LEVELS.stop :].any():
        raise ValueError("formats 6 to 8 have no offsets beyond their middle mean levels")
    return _pack_masked(offsets[..., _OLD_LEVELS].reshape(-1, OLD_MEAN_LEVELS), OLD_MEAN_LEVELS)


def unpack_classes(data: bytes, patches: int, channels: int, means: bool = False,
                   chroma: bool = False) -> tuple[np.ndarray, list[int], np.ndarray, np.ndarray | None]:
    """Inverse of :meth:`ScaleChoice.pack` with class offsets (format 5; ``means``: and mean
    offsets, format 6; ``chroma``: with the chroma source's, format 7): every patch's offsets
    ``[patches, channels]``, each channel's sharpness, the class offsets ``[channels,
    SYMBOL_CLASSES]`` and the mean offsets ``[channels, MEAN_SOURCES, MEAN_LEVELS]`` (a format 6
    tile's chroma source zero; None without ``means``)."""
    at = 2 * channels + (patches * channels + 1) // 2  # (the format 4 field's length)
    classes, at = _unpack_masked(data, at, channels, SYMBOL_CLASSES, "class offsets")
    mean_offsets = None
    if means:
        sources = FORMAT7_SOURCES if chroma else FORMAT6_SOURCES
        stored, at = _unpack_masked(data, at, channels * sources, OLD_MEAN_LEVELS, "mean offsets")
        mean_offsets = np.zeros((channels, MEAN_SOURCES, MEAN_LEVELS), dtype=stored.dtype)
        mean_offsets[:, :sources, _OLD_LEVELS] = stored.reshape(channels, sources, OLD_MEAN_LEVELS)
        _check_sources(mean_offsets)
    if at != len(data):
        raise BitstreamError(f"file is corrupt ({'mean' if means else 'class'} offsets do not match the tile)")
    return (*unpack_patches(data[: 2 * channels + (patches * channels + 1) // 2], patches, channels), classes,
            mean_offsets)


@dataclass
class FineField:
    """A format 9 tile's scales field (:meth:`ScaleChoice.pack` of a :attr:`ScaleChoice.fine` choice)."""

    per_patch: np.ndarray  # [patches, c] log-scale offsets
    sharpness: list[int]
    classes: np.ndarray  # [c, SYMBOL_CLASSES]
    means: np.ndarray  # [c, MEAN_SOURCES, MEAN_LEVELS]
    grey_red: bool
    least_squares: np.ndarray  # [c, least_squares.MOST_TERMS] (zero for channels without)
    phases: np.ndarray | None = None  # [c, PHASES] (format 11; None: format 9)


def unpack_fine(data: bytes, patches: int, channels: int, phases: bool = False) -> FineField:
    """Inverse of :meth:`ScaleChoice.pack` for a format 9 tile (``phases``: a format 11 tile)."""
    head = 2 * channels + (patches * channels + 1) // 2  # (the format 4 field's length)
    classes, at = _unpack_masked(data, head, channels, SYMBOL_CLASSES, "class offsets")
    stored, at = _unpack_masked(data, at, channels * MEAN_SOURCES, MEAN_LEVELS, "mean offsets")
    means = stored.reshape(channels, MEAN_SOURCES, MEAN_LEVELS)
    _check_sources(means)
    if at >= len(data) or data[at] > 1 or (data[at] and channels != 3):
        raise BitstreamError("file is corrupt (format 9 flags do not match the tile)")
    grey_red = bool(data[at])
    coefficients, used, at = least_squares.unpack(data, at + 1, channels)
    if used != [bool(means[c, LS_SOURCES].any()) for c in range(channels)]:
        raise BitstreamError("file is corrupt (least-squares coefficients do not match the mean offsets)")
    phase_offsets = None
    if phases:
        phase_offsets, at = _unpack_masked(data, at, channels, PHASES, "phase offsets")
        if not phase_offsets.any():  # (the encoder writes a format 9 tile then)
            raise BitstreamError("file is corrupt (a format 11 tile without phase offsets)")
    if at != len(data):
        raise BitstreamError(f"file is corrupt (format {11 if phases else 9} scales field and tile do not match)")
    return FineField(*unpack_patches(data[:head], patches, channels), classes, means, grey_red, coefficients,
                     phase_offsets)


def _check_sources(mean_offsets: np.ndarray) -> None:
    """Refuse mean offsets from sources a channel cannot have."""
    if any(mean_offsets[c, c:CHANNEL_SOURCES].any() for c in range(len(mean_offsets))):
        raise BitstreamError("file is corrupt (mean offsets from a channel that is not before)")
    if mean_offsets[0, CHROMA_SOURCE].any():
        raise BitstreamError("file is corrupt (chroma mean offsets for the first channel)")


def unpack_patches(data: bytes, patches: int, channels: int) -> tuple[np.ndarray, list[int]]:
    """Inverse of :func:`pack_patches`: every patch's offsets ``[patches, channels]`` and each
    channel's sharpness."""
    count = patches * channels
    if len(data) != 2 * channels + (count + 1) // 2:
        raise BitstreamError("file is corrupt (per-patch log-scale offsets do not match the tile)")
    tile = [int(v) for v in np.frombuffer(data[:channels], dtype=np.int8)]
    sharpness = [int(v) for v in data[channels : 2 * channels]]
    if not all(v >= 1 for v in sharpness):  # (any byte from 1 up is a valid sharpness)
        raise BitstreamError("file is corrupt (mixture sharpness out of range)")
    raw = np.frombuffer(data[2 * channels :], dtype=np.uint8)
    nibbles = np.stack([raw >> 4, raw & 0xF], axis=1).reshape(-1)[:count].astype(np.int64)
    deltas = np.where(nibbles > DELTA_MAX, nibbles - 16, nibbles)
    return patch_offsets(tile, deltas.reshape(patches, channels)), sharpness
