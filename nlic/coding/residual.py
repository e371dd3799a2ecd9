"""Wavefront coding of the quantized residual of a batch of 64x64 patches.

The encoder knows every residual, so it evaluates the integer network on whole patches, a few at
a time (:meth:`ResidualCoder.analyse`); the decoder evaluates it wavefront by wavefront (all pixels of
one wavefront, in every patch of a few tiles, together) as the residuals appear.  Both reach the
same integers (see :mod:`nlic.residual.integer`), then code each (wavefront, channel) group of a
tile with the same steps:

1. window step: the integer mixture becomes a window of bins per symbol, all the group's windows
   and tables in one compiled call (:func:`nlic.entropy.pmf.plan_group`; the decoder plans the
   group of every tile it decodes in lockstep in one call too); one range-coder call per tile and
   window width (bin or escape entry);
2. escape step: symbols outside their window, coded with the same mixture over the feasible
   bins outside the window (escaping costs time, not rate).

Per-tile adaptation: each channel's output layer may be replaced by one the encoder re-fitted to
the tile (:mod:`nlic.coding.adaptation`); both sides then compute with that layer.  A grey image is
coded as channel 0 with its context replicated to the three channels the network reads (by the
model's grey heads when it has them).

Where the time goes (a profile of one decode, one thread): the network's products a fifth, the
window tables a fifth, the current-channel products a tenth, the range coder 8 %, the context
gather, requantization and the per-symbol classes and mean levels 3-4 % each, the rest Python per
wavefront and group; which is why the decoder evaluates several tiles in lockstep
(:meth:`ResidualCoder.decode_tiles`), derives a wavefront's classes and levels in compiled passes
(:func:`scales.gathered_context`, :func:`scales.symbol_adjustments`), and the encoder plans several
wavefronts at once (:class:`_ChannelPlan`).  Python's share matters twice: tiles decoded on two
threads wait for each other's Python work (the GIL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nlic.coding import least_squares, scale_fields, scales, search
from nlic.compiled import numba
from nlic.entropy.pmf import SHARPNESS_STEPS, Classes, plan_escapes, plan_group
from nlic.entropy.range_coder import SymbolDecoder, SymbolEncoder
from nlic.errors import BitstreamError
from nlic.residual.integer import MEAN_STEPS, ChannelParams, IntegerHead, IntLinear, exact_float32
from nlic.residual.masks import schedule
from nlic.residual.patches import PATCH
from nlic.residual.quantizer import bin_width

CHANNELS = 3
#: patches evaluated together by the encoder: the activations of one patch stay in the CPU's cache
#: (a whole tile's, tens of MB, do not: 2x slower; with the compiled channel heads one patch at a
#: time encoded 0.92 MP in 3.7 s on one thread, two at a time in 4.3 s)
ANALYSE_CHUNK = 1
#: wavefronts the encoder plans together (their tables, about 1 MB, stay in the CPU's cache)
PLAN_STEPS = 8


@dataclass
class Patches:
    """What both sides know of a batch of patches before the residual: ``[P, c, S, S]`` feasible
    bins ``lo``/``hi`` (c = 1 grey or 3), ``valid`` pixels ``[P, S, S]`` and the integer lossy
    features ``[P, S, S, F]`` (None without a lossy layer)."""

    lo: Tensor
    hi: Tensor
    valid: Tensor
    features: Tensor | None = None
    #: the network reads residuals clamped to +-context_limit, the magnitude its integer layers are
    #: bounded for (a bin's value can reach tau past it); None: as they are (format 2 tiles)
    context_limit: int | None = None

    def context(self, r: Tensor) -> Tensor:
        """Reconstructed residuals as the network reads them."""
        return r if self.context_limit is None else r.clamp(-self.context_limit, self.context_limit)

    @classmethod
    def joined(cls, parts: Sequence[Patches]) -> Patches:
        """The patches of several tiles as one batch (they share the context clamp)."""
        if len(parts) == 1:
            return parts[0]
        features = None if parts[0].features is None else torch.cat([p.features for p in parts])
        return cls(*(torch.cat([getattr(p, f) for p in parts]) for f in ("lo", "hi", "valid")), features,
                   parts[0].context_limit)

    def context_array(self, r: np.ndarray) -> np.ndarray:
        """:meth:`context` of a NumPy array (in place)."""
        return r if self.context_limit is None else np.clip(r, -self.context_limit, self.context_limit, out=r)

    @property
    def channels(self) -> int:
        return self.lo.shape[1]


@dataclass
class SymbolContext:
    """The encoder's view of a tile's symbol classes (per channel ``[P*S*S]``, :meth:`ResidualCoder.classes`)
    and mean levels (per channel and source, :meth:`ResidualCoder.mean_levels`; None: not computed)."""

    classes: list[np.ndarray] | None
    levels: list[list[np.ndarray | None]] | None
    #: format 9: the tile's least-squares coefficients ``[c, MOST_TERMS]`` (None: a format 6 to 8 tile)
    least_squares: np.ndarray | None = None


@dataclass
class TileStream:
    """What the decoder has of one tile: its residual stream, patches, output layers (None: the
    shared ones), each patch's log-scale offsets ``[P, c]`` (None: zero), each channel's
    mixture sharpness (None: neutral), offsets per symbol class ``[c, SYMBOL_CLASSES]`` and mean
    offsets ``[c, MEAN_SOURCES, MEAN_LEVELS]`` (None: none), and whether the grey heads give R's
    mixtures (format 8)."""

    data: bytes
    patches: Patches
    layers: Sequence[IntLinear | None]
    scale_offsets: np.ndarray | None = None
    sharpness: Sequence[int] | None = None
    class_offsets: np.ndarray | None = None
    mean_offsets: np.ndarray | None = None
    #: R's mixtures from the grey heads reading the R plane alone (format 8)
    grey_red: bool = False
    #: format 9: the finer mean levels and the least-squares coefficients ``[c, MOST_TERMS]``
    fine: bool = False
    least_squares: np.ndarray | None = None
    #: format 11: the offsets per pixel phase ``[c, PHASES]`` (None: none)
    phases: np.ndarray | None = None


def _cpu(params: ChannelParams) -> ChannelParams:
    return ChannelParams(params.table.cpu())


class ResidualCoder:
    """Codes quantized residuals (as bin indices) with one integer head.

    Args:
        head: the integer network of the tau being coded.
        mask: context mask name (sets the wavefront schedule).
        kernel: context window size.
    """

    def __init__(self, head: IntegerHead, mask: str, kernel: int) -> None:
        self.head = head
        steps = schedule(mask, PATCH)
        #: the wavefronts' pixels one after the other, and where each wavefront starts (and the end)
        self._step_pixels = np.concatenate([rows * PATCH + cols for rows, cols in steps]).astype(np.int64)
        self._step_starts = np.cumsum([0] + [len(rows) for rows, _ in steps]).astype(np.int64)
        self.halo = kernel // 2
        self.offsets = head.offsets
        #: where the activity levels' neighbours are among the taps (None: the mask lacks one, so
        #: tiles of this model carry no class offsets)
        self.activity_taps = (None if not all(t in self.offsets for t in scales.ACTIVITY_TAPS)
                              else [self.offsets.index(t) for t in scales.ACTIVITY_TAPS])
        #: the encoder also chooses mean offsets per mean level (format 6); False: format 5 tiles
        self.mean_offsets = True
        #: and among them those of the chroma source (format 7); False: format 6 tiles
        self.chroma_source = True
        #: where the least-squares predictor's neighbours are among the taps (None: the mask lacks
        #: one, so this model's tiles are format 8 at most)
        self.least_squares_taps = least_squares.tap_index(self.offsets)
        #: format 9: finer mean levels and the least-squares source; False: formats 6 to 8
        self.fine = self.least_squares_taps is not None
        #: format 11: offsets per pixel phase on format 9 tiles; False: format 9 at most
        self.phases = True

    @staticmethod
    def surprises(params: list[ChannelParams], bins: Tensor, tau: int,
                  take: np.ndarray | None = None) -> list[np.ndarray]:
        """:func:`scales.surprise` of every channel but the last (the channels after it read them),
        flat over ``[P, S, S]`` (``take``: of those symbols only): what :meth:`classes` and
        :meth:`mean_levels` share."""
        w = bin_width(tau)
        pick = (lambda a: a.reshape(-1)) if take is None else (lambda a: a.reshape(-1)[take])  # noqa: E731
        return [scales.surprise(_rows(p.table.numpy(), take), pick(bins[:, c].numpy()), w)
                for c, p in enumerate(params[:-1])]

    def classes(self, params: list[ChannelParams], bins: Tensor, patches: Patches, tau: int,
                take: np.ndarray | None = None, distances: list[np.ndarray] | None = None,
                near: tuple[np.ndarray, np.ndarray] | None = None) -> list[np.ndarray]:
        """Each channel's symbol classes (:func:`scales.symbol_classes`), flat over ``[P, S, S]``
        (``take``: of those symbols only; ``distances``: their :meth:`surprises`, ``near``: the
        patches' :func:`scales.patch_context`, when computed already)."""
        w = bin_width(tau)
        activity = (near or scales.patch_context(patches.context(bins * w).numpy(), w))[0]
        pick = (lambda a: a.reshape(-1)) if take is None else (lambda a: a.reshape(-1)[take])  # noqa: E731
        distances = self.surprises(params, bins, tau, take) if distances is None else distances
        return [scales.symbol_classes(pick(activity[:, c]), None, w, distances[c - 1] if c else None)
                for c in range(len(params))]

    @classmethod
    def mean_levels(cls, params: list[ChannelParams], bins: Tensor, patches: Patches, tau: int,
                    take: np.ndarray | None = None, distances: list[np.ndarray] | None = None,
                    near: tuple[np.ndarray, np.ndarray] | None = None,
                    coefficients: np.ndarray | None = None) -> list[list[np.ndarray | None]]:
        """Each channel's mean levels per source (:data:`scales.MEAN_SOURCES`: the signed surprise
        levels of the two channels before it, None where there is none, then those of its own
        mean's deviation from each of :data:`scales.PREDICTORS` and from its chroma prediction, None
        for R; with the least-squares ``coefficients`` (format 9) cut at the finer limits and
        followed by its deviation from its least-squares prediction and the :func:`scales.feedback`
        of its neighbours' errors from theirs and from the network's means), flat over ``[P, S, S]``
        (``take``: of those symbols only; ``distances``: their :meth:`surprises`, ``near``: the
        patches' :func:`scales.patch_context`, when computed already)."""
        w = bin_width(tau)
        fine = coefficients is not None
        valid = patches.valid.numpy()
        pick = (lambda a: a.reshape(-1)) if take is None else (lambda a: a.reshape(-1)[take])  # noqa: E731
        context = patches.context(bins * w).numpy()
        predictions = (near or scales.patch_context(context, w))[1]
        distances = cls.surprises(params, bins, tau, take) if distances is None else distances
        surprise = [scales.distance_levels(d, w, signed=True, fine=fine) for d in distances]
        out = []
        for c, p in enumerate(params):
            means = scales.heaviest_means(_rows(p.table.numpy(), take))
            out.append([surprise[c - j - 1] if c > j else None for j in range(scales.CHANNEL_SOURCES)]
                       + [scales.distance_levels(scales.deviation(None, pick(q[:, c]), w, means), w, True, fine)
                          if c > 0 or k != scales.CHROMA else None for k, q in enumerate(predictions)])
            if fine:
                prediction = least_squares.predict(context, coefficients[c], c)
                out[-1].append(scales.distance_levels(2 * (means - pick(prediction)), w, True, fine))
                network = (means if take is None else scales.heaviest_means(_rows(p.table.numpy(), None)))
                for predicted in (prediction, network.reshape(prediction.shape)):
                    feedback = scales.feedback(scales.errors(context[:, c], predicted, valid))
                    out[-1].append(scales.distance_levels(pick(feedback), w, True, fine))
        return out

    def symbol_context(self, params: list[ChannelParams], bins: Tensor, patches: Patches, tau: int,
                       levels: bool | None = None) -> SymbolContext:
        """Every symbol's classes and (``levels``; None: :attr:`mean_offsets`) mean levels, flat over
        ``[P, S, S]``: what the encoder's choice of offsets (on a sample) and its coding (on every
        symbol) both read, computed once per tile (None where the model's taps lack the neighbours)."""
        if self.activity_taps is None:
            return SymbolContext(None, None)
        distances = self.surprises(params, bins, tau)
        context = patches.context(bins * bin_width(tau)).numpy()
        near = scales.patch_context(context, bin_width(tau))
        with_levels = self.mean_offsets if levels is None else levels
        coefficients = (least_squares.fit(context, patches.valid.numpy())
                        if with_levels and self.fine and self.least_squares_taps is not None else None)
        return SymbolContext(self.classes(params, bins, patches, tau, None, distances, near),
                             self.mean_levels(params, bins, patches, tau, None, distances, near, coefficients)
                             if with_levels else None, coefficients)

    # ------------------------------------------------------------------ encode
    @torch.no_grad()
    def analyse(self, bins: Tensor, patches: Patches, tau: int) -> list[tuple[Tensor, ...]]:
        """The inputs of every channel's output layer for every symbol of ``bins`` ``[P, c, S, S]``
        (each block ``[P, S, S, *]``): the whole-patch evaluation only the encoder can do."""
        parts = list(self._evaluate(bins, patches, tau, self.head.channel_inputs))
        return [tuple(torch.cat(block) for block in zip(*(p[c] for p in parts))) for c in range(patches.channels)]

    @torch.no_grad()
    def whole_mixtures(self, bins: Tensor, patches: Patches, tau: int) -> list[ChannelParams]:
        """:meth:`mixtures` of :meth:`analyse` under the shared output layers, without keeping the
        output layers' inputs of the whole tile (tens of MB) in between."""
        def table(c: int, hidden: Tensor, skip: Tensor, current: Tensor) -> np.ndarray:  # (the decoder's path)
            rows = hidden.shape[:-1].numel()
            cur = np.ascontiguousarray(current.reshape(rows, CHANNELS).cpu().numpy(), dtype=np.float32)
            return self.head.channel_table(c, hidden.reshape(rows, -1), skip.reshape(rows, -1), cur)

        parts = list(self._evaluate(bins, patches, tau, table))
        return [ChannelParams(torch.from_numpy(np.concatenate([p[c] for p in parts]))) for c in range(patches.channels)]

    def _evaluate(self, bins: Tensor, patches: Patches, tau: int, finish: Callable) -> Iterator[list]:
        """``finish(c, hidden, skip, current)`` for every channel (the arguments of
        :meth:`IntegerHead.channel_inputs`), a few patches at a time (their activations stay in the
        CPU's cache)."""
        w = bin_width(tau)
        device = self.head.device
        with exact_float32():
            r = patches.context(bins * w).float().expand(-1, CHANNELS, -1, -1).to(device)  # grey: replicated
            chunk = ANALYSE_CHUNK if device.type == "cpu" else r.shape[0]
            for at in range(0, r.shape[0], chunk):
                part = slice(at, at + chunk)
                feats = None if patches.features is None else patches.features[part].to(device)
                act, skip = self.head.context_full(r[part], feats)
                trunk = self.head.trunk_features(act)
                hidden = self.head.channel_hidden(trunk, patches.channels)  # (grey: channel 0's block only)
                current = r[part].permute(0, 2, 3, 1)
                yield [finish(c, hidden, skip, current) for c in range(patches.channels)]

    @torch.no_grad()
    def mixtures(self, inputs: list[tuple[Tensor, ...]], layers: Sequence[IntLinear | None]) -> list[ChannelParams]:
        """Integer mixtures of :meth:`analyse`'s inputs under the tile's output layers."""
        with exact_float32():
            return [_cpu(self.head.channel_output(c, x, layer)) for c, (x, layer) in enumerate(zip(inputs, layers))]

    def _decode_order(self, valid: Tensor) -> tuple[np.ndarray, list[int]]:
        """Flat indices (into ``[P*S*S]``) of the valid pixels in decoding order, and where each
        wavefront's run ends: what the decoder meets step by step, as one permutation (one compiled
        pass: the per-wavefront NumPy indexing it replaces cost about 5 ms a tile, paid twice by the
        encoder and once by the decoder)."""
        flat = np.ascontiguousarray(valid.reshape(valid.shape[0], -1).numpy(), dtype=np.bool_)
        order, ends = _wavefront_order(flat, self._step_pixels, self._step_starts)
        return order, ends.tolist()

    def _sample(self, params: list[ChannelParams], bins: Tensor, patches: Patches,
                count: int) -> tuple[np.ndarray, list, list, list, list]:
        """``count`` symbols evenly spaced in decoding order (flat indices into ``[P, S, S]``) and,
        per channel, their mixtures, bins and feasible bins."""
        order, _ = self._decode_order(patches.valid)
        take = order[np.linspace(0, len(order) - 1, min(count, len(order))).astype(np.int64)]
        tables = [np.take(p.table.numpy().reshape(-1, p.table.shape[-1]), take, axis=0) for p in params]
        return take, tables, *([t[:, c].numpy().reshape(-1)[take] for c in range(len(params))]
                               for t in (bins, patches.lo, patches.hi))

    def grey_red_pays(self, red: ChannelParams, bins: Tensor, patches: Patches, tau: int, margin: float) -> bool:
        """Whether these grey heads code a colour tile's R plane (``bins`` ``[P, 1, S, S]``,
        ``patches`` of it) in fewer bits than its colour heads' mixtures ``red`` by more than
        ``margin`` of them: both estimated on the evenly spaced sample :meth:`scale_offsets` starts
        from, each under its best log-scale offset, the grey heads evaluated on those pixels alone
        (from their gathered neighbours: a small part of a whole tile's network pass)."""
        take, (colour,), (symbols,), (lo,), (hi,) = self._sample([red], bins, patches, search.SAMPLES)
        plane = patches.context(bins[:, 0] * bin_width(tau)).numpy()
        S, halo = plane.shape[-1], self.halo
        padded = np.pad(plane, ((0, 0), (halo, halo), (halo, halo)))
        p, i, j = take // (S * S), take // S % S + halo, take % S + halo
        taps = np.stack([padded[p, i + di, j + dj] for di, dj in self.offsets], 1).astype(np.float32)
        with exact_float32():
            grey = self.head.plane_table(torch.from_numpy(taps).to(self.head.device))
        ours, theirs = (search.choose([t], [symbols], [lo], [hi], tau)[1] for t in (colour, grey))
        return theirs < ours * (1 - margin)

    def scale_offsets(self, params: list[ChannelParams], bins: Tensor, patches: Patches, tau: int,
                      per_patch: bool = True, context: SymbolContext | None = None) -> scale_fields.ScaleChoice:
        """Each channel's log-scale offset for this tile (:mod:`nlic.coding.scales`), chosen on an
        evenly spaced sample of its symbols, then (``per_patch``: format 4) each channel's mixture
        sharpness on the same sample and each patch's delta on a larger one, then (formats 5 and 6,
        where the model's taps hold the neighbours) each channel's mean offsets per source and mean
        level on every second symbol of that one, and under them its offsets per symbol class
        (``context``: the tile's :meth:`symbol_context`, when computed already)."""
        _, *fields = self._sample(params, bins, patches, search.SAMPLES)
        offsets, _ = search.choose(*fields, tau)
        if not per_patch:
            return scale_fields.ScaleChoice(offsets, None)
        sharpness = search.choose_sharpness(*fields, tau, offsets)
        if any(s != SHARPNESS_STEPS for s in sharpness):  # the offsets that suit the sharpened mixtures
            offsets, _ = search.choose(*fields, tau, sharpness)
        P = patches.valid.shape[0]
        take, *fields = self._sample(params, bins, patches, search.PATCH_SAMPLES * P)
        patch = take // (PATCH * PATCH)
        deltas, _ = search.refine(*fields, patch, P, tau, offsets, sharpness)
        choice = scale_fields.ScaleChoice(offsets, deltas, sharpness)
        if self.activity_taps is not None:
            every = slice(None, None, search.CLASS_SAMPLE_STRIDE)
            per = choice.per_patch(P)
            base = [per[patch[every], c] for c in range(len(params))]
            tables, *rest = ([x[every] for x in f] for f in fields)
            scale = int(patches.valid.sum()) / len(take[every])
            if context is None:
                context = self.symbol_context(params, bins, patches, tau)
            sampled = take[every]
            if self.mean_offsets:  # format 6: the means first, the classes' scales under them
                skip = scales.CHROMA_SOURCE if not self.chroma_source else None
                levels = [[None if lev is None or j == skip else lev[sampled] for j, lev in enumerate(c)]
                          for c in context.levels]
                sub = slice(None, None, search.MEAN_SAMPLE_STRIDE)
                source_bits = None
                if context.least_squares is not None:  # the coefficients must pay for themselves
                    source_bits = [least_squares.bits(c) for c in range(len(params))]
                means = search.choose_means([t[sub] for t in tables], *([x[sub] for x in f] for f in rest),
                                            [[None if lev is None else lev[sub] for lev in c] for c in levels],
                                            [b[sub] for b in base], tau, sharpness, scale * search.MEAN_SAMPLE_STRIDE,
                                            source_bits)
                if means.any():
                    choice.means = means
                    if context.least_squares is not None:  # format 9 (its levels were cut finer)
                        choice.fine, choice.least_squares = True, context.least_squares
            shifts = None if choice.means is None else [scales.mean_shift(lev, choice.means[c], bin_width(tau))
                                                        for c, lev in enumerate(levels)]
            found = search.choose_classes(tables, *rest, [cls[sampled] for cls in context.classes], base, tau,
                                          sharpness, scale, shifts)
            choice.classes = found if found.any() else None
            if self.phases and choice.fine and tau <= search.PHASE_MAX_TAU:  # format 11: under all the others
                choice.phases = search.choose_phases(
                    *(self._phase_sample(choice, context, fields, take, per, part, tau)
                      for part in (every, slice(1, None, search.CLASS_SAMPLE_STRIDE))), tau, sharpness,
                    int(patches.valid.sum()))
        return choice

    @staticmethod
    def _phase_sample(choice: scale_fields.ScaleChoice, context: SymbolContext, fields: list, take: np.ndarray,
                      per: np.ndarray, part: slice, tau: int) -> search.PhaseSample:
        """The symbols ``take[part]`` of the per-patch sample (``fields``: their tables, bins and
        feasible bins) as :func:`search.choose_phases` reads them: their phases, and their offsets and
        mean shifts under ``choice``."""
        sampled = take[part]
        patch = sampled // (PATCH * PATCH)
        base = []
        for c in range(len(choice.tile)):
            moved = per[patch, c]
            if choice.classes is not None:
                moved = moved + choice.classes[c][context.classes[c][sampled]]
            base.append(moved)
        shifts = None
        if choice.means is not None:
            shifts = [scales.mean_shift([None if lev is None else lev[sampled] for lev in levels], choice.means[c],
                                        bin_width(tau)) for c, levels in enumerate(context.levels)]
        return search.PhaseSample(*([x[part] for x in f] for f in fields), scales.phase_of(sampled, PATCH), base,
                                  shifts)

    @torch.no_grad()
    def encode(self, params: list[ChannelParams], bins: Tensor, patches: Patches, tau: int,
               scale_offsets: np.ndarray | None = None, sharpness: Sequence[int] | None = None,
               class_offsets: np.ndarray | None = None, mean_offsets: np.ndarray | None = None,
               context: SymbolContext | None = None, phase_offsets: np.ndarray | None = None) -> bytes:
        """Encode ``bins`` given their mixtures (:meth:`mixtures`), each patch's log-scale offsets
        (``[P, c]``, :meth:`scale_fields.ScaleChoice.per_patch`), each channel's sharpness, offsets
        per symbol class (``[c, SYMBOL_CLASSES]``) and mean offsets (``[c, MEAN_SOURCES, MEAN_LEVELS]``):
        the symbols in the order the decoder meets them (wavefront by wavefront, channel by channel,
        each group's windows by width, then its escapes by span), planned PLAN_STEPS wavefronts of a
        channel at a time (:class:`_ChannelPlan`); ``context``: the tile's :meth:`symbol_context`, when
        computed already; ``phase_offsets``: the offsets per pixel phase ``[c, PHASES]`` (format 11)."""
        enc = SymbolEncoder()
        order, ends = self._decode_order(patches.valid)
        offsets = _phase_offsets(_symbol_offsets(scale_offsets, order, patches),
                                 None if phase_offsets is None else phase_offsets[None], order, 0)
        # (classes and levels computed in patch order, then taken in decoding order: cheaper)
        if (class_offsets is not None or mean_offsets is not None) and (
                context is None or (mean_offsets is not None and context.levels is None)):
            context = self.symbol_context(params, bins, patches, tau, levels=mean_offsets is not None)
        if class_offsets is not None:
            classes = [cls[order] for cls in context.classes]
            offsets = [off + class_offsets[c][classes[c]] for c, off in enumerate(offsets)]
        levels = None if mean_offsets is None else [
            [None if lev is None else lev[order] for lev in channel] for channel in context.levels]
        sharp = sharpness or [SHARPNESS_STEPS] * len(params)
        steps = np.array([0, *ends], dtype=np.int64)
        channels = []
        for c, p in enumerate(params):  # the tables stay in patch order: the plans read their rows by ``order``
            table = p.table.numpy().reshape(-1, p.table.shape[-1])
            shift = None if levels is None else scales.mean_shift(levels[c], mean_offsets[c], bin_width(tau))
            if shift is None:
                shift = np.zeros(len(order), dtype=np.int64)
            channels.append((table, offsets[c], shift, sharp[c], *(np.take(t[:, c].numpy().reshape(-1), order)
                                                                   for t in (patches.lo, patches.hi, bins))))
        for first in range(0, len(ends), PLAN_STEPS):
            last = min(first + PLAN_STEPS, len(ends))
            rows = slice(steps[first], steps[last])
            plans = [_ChannelPlan.of(table, offset[rows], sharp_c, tau, lo[rows], hi[rows], sym[rows],
                                     steps[first : last + 1] - steps[first], shift[rows], order[rows])
                     for table, offset, shift, sharp_c, lo, hi, sym in channels]
            for step in range(last - first):
                for plan in plans:
                    plan.emit(enc, step)
        return enc.finish()

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode(self, data: bytes, patches: Patches, tau: int, layers: Sequence[IntLinear | None],
               scale_offsets: np.ndarray | None = None, sharpness: Sequence[int] | None = None,
               class_offsets: np.ndarray | None = None, mean_offsets: np.ndarray | None = None,
               fine: bool = False, least_squares: np.ndarray | None = None,
               phase_offsets: np.ndarray | None = None) -> Tensor:
        """Decode the bins ``[P, c, 64, 64]`` (zero outside ``valid``) under the tile's output layers,
        log-scale offsets, sharpness, class offsets, mean offsets, (format 9) least-squares
        coefficients and (format 11) phase offsets (see :meth:`decode_tiles`)."""
        return self.decode_tiles([TileStream(data, patches, layers, scale_offsets, sharpness, class_offsets,
                                             mean_offsets, fine=fine, least_squares=least_squares,
                                             phases=phase_offsets)], tau)[0]

    @torch.no_grad()
    def decode_tiles(self, tiles: Sequence[TileStream], tau: int,
                     red_head: IntegerHead | None = None) -> list[Tensor]:
        """Decode several tiles in lockstep: wavefront by wavefront, the context and the network for
        the pixels of every tile at once, then channel by channel each tile's window and escape steps
        from its own stream (that channel's residuals join the next channels' inputs).  Each tile's
        stream is read exactly as if it were decoded alone; evaluating the tiles together pays
        Python's per-wavefront work once instead of once per tile, and multiplies larger matrices.

        Tiles decoded together share the context clamp and have no adapted output layers (a tile
        with them is decoded alone).  ``red_head``: the grey heads, which give R's mixtures in the
        tiles that ask for them (format 8) from the R plane alone.  Returns each tile's bins
        ``[P, c, 64, 64]``.
        """
        if len(tiles) > 1 and (len({t.patches.context_limit for t in tiles}) > 1
                               or any(layer is not None for t in tiles for layer in t.layers)):
            raise ValueError("tiles decoded together must share the context clamp and the output layers")
        w = bin_width(tau)
        patches = Patches.joined([t.patches for t in tiles])
        layers = tiles[0].layers
        P, n_ch = patches.valid.shape[0], patches.channels
        order, ends = self._decode_order(patches.valid)
        first_patch = np.cumsum([0] + [t.patches.valid.shape[0] for t in tiles])
        tile_of = np.searchsorted(first_patch, order // (PATCH * PATCH), side="right") - 1  # rows are tile-major
        residuals = _ResidualBuffer.of(order, P, self.halo, self.offsets)
        lo = [np.take(patches.lo[:, c].numpy().reshape(-1), order) for c in range(n_ch)]
        hi = [np.take(patches.hi[:, c].numpy().reshape(-1), order) for c in range(n_ch)]
        device = self.head.device
        on_cpu = device.type == "cpu"
        feats = (None if patches.features is None
                 else patches.features.reshape(-1, patches.features.shape[-1])[torch.from_numpy(order)].to(device))
        out = np.zeros((n_ch, P * PATCH * PATCH), dtype=np.int64)
        offsets = _phase_offsets(_symbol_offsets(_joined_offsets(tiles, n_ch), order, patches),
                                 _joined_phases(tiles, n_ch), order, tile_of)
        sharpness = [t.sharpness or [SHARPNESS_STEPS] * n_ch for t in tiles]
        sharp = np.asarray(sharpness, dtype=np.int64)[tile_of].T  # [c, symbols] each symbol's tile's
        decoders = [SymbolDecoder(t.data) for t in tiles]
        by_class = any(t.class_offsets is not None for t in tiles)
        by_mean = any(t.mean_offsets is not None for t in tiles)
        # every tile's class and mean offsets (zeros: none), indexed by the tile of each symbol
        class_offsets = np.zeros((len(tiles), n_ch, scales.SYMBOL_CLASSES), dtype=np.int64)
        mean_offsets = np.zeros((len(tiles), n_ch, scales.MEAN_SOURCES, scales.MEAN_LEVELS), dtype=np.int64)
        for i, t in enumerate(tiles):
            if t.class_offsets is not None:
                class_offsets[i] = t.class_offsets
            if t.mean_offsets is not None:
                mean_offsets[i] = t.mean_offsets
        if (by_class or by_mean) and self.activity_taps is None:
            raise BitstreamError("file is corrupt (class or mean offsets for a model without the neighbours they need)")
        # format 9: each tile's mean levels cut finer, its least-squares coefficients (zeros: none)
        fine = np.asarray([t.fine for t in tiles])
        coefficients = np.zeros((len(tiles), n_ch, least_squares.MOST_TERMS), dtype=np.int64)
        for i, t in enumerate(tiles):
            if t.least_squares is not None:
                coefficients[i] = t.least_squares
        by_least_squares = bool(coefficients.any())
        by_feedback = bool(fine.any()) and by_mean
        limits = scales.tile_mean_limits(fine, w)  # (each tile's mean levels: format 9's finer)
        # format 9: each decoded pixel's least-squares and network errors, read back by its neighbours
        errors = _ErrorBuffer.of(order, P, self.halo) if by_feedback else None
        if by_least_squares and self.least_squares_taps is None:
            raise BitstreamError("file is corrupt (a least-squares source for a model without the neighbours it needs)")
        # a grey image's plane is read in all three channels: channel 0's table from the plane alone
        # (summed channel weights, one hidden block; the same integers)
        plane = n_ch == 1 and layers[0] is None
        grey_red = np.asarray([t.grey_red for t in tiles])[tile_of]  # each symbol's tile's
        if grey_red.any() and (red_head is None or n_ch != CHANNELS):
            raise BitstreamError("file is corrupt (grey heads for R in a tile that cannot have them)")
        start = 0
        with exact_float32():  # (entered once: it takes a lock)
            for end in ends:
                if end == start:
                    continue
                run = slice(start, end)
                bounds = np.searchsorted(tile_of[run], np.arange(len(tiles) + 1))  # each tile's rows
                tiles_in = np.flatnonzero(bounds[1:] > bounds[:-1])  # the tiles with pixels in this wavefront
                bounds_in = np.append(bounds[tiles_in], bounds[-1])
                gathered = residuals.gather(start, end)
                taps = torch.from_numpy(gathered)
                activity = predictions = None
                if by_class or by_mean:
                    activity, predictions = scales.gathered_context(gathered, self.activity_taps, n_ch, w)
                activity = activity if by_class else None
                predictions = predictions if by_mean else None
                sums = (least_squares.gathered(gathered, self.least_squares_taps, coefficients, tile_of[run], n_ch)
                        if by_least_squares else None)
                feedbacks = errors.feedback(start, end, n_ch) if errors is not None else None
                made = np.zeros((2, end - start, n_ch), dtype=np.int64) if by_feedback else None
                distances: list[np.ndarray] = []  # each decoded channel's surprise (classes, mean levels)
                if not plane:
                    act, skip = self.head.context_gathered(taps if on_cpu else taps.to(device),
                                                           None if feats is None else feats[run])
                    hidden = self.head.channel_hidden(self.head.trunk_features(act))
                current = np.zeros((end - start, CHANNELS), dtype=np.float32)  # this pixel's channels so far
                for c in range(n_ch):
                    if plane:
                        table = self.head.plane_table(_first_channel(gathered, device),
                                                      None if feats is None else feats[run])
                    elif c == 0 and grey_red[run].any():  # format 8 tiles' R from the grey heads
                        table = self._red_table(red_head, grey_red[run], gathered,
                                                None if feats is None else feats[run], hidden, skip, current)
                    elif layers[c] is None:
                        table = self.head.channel_table(c, hidden, skip, current)
                    else:
                        inputs = self.head.channel_inputs(c, hidden, skip, torch.from_numpy(current).to(device))
                        table = self.head.channel_output(c, inputs, layers[c]).table.cpu().numpy()
                    low, high = lo[c][run], hi[c][run]
                    offset, shift = offsets[c][run], None
                    if by_class or by_mean:
                        offset, shift, heaviest = scales.symbol_adjustments(
                            table, c, offset, tile_of[run], activity, distances, predictions, class_offsets[:, c],
                            mean_offsets[:, c], w, limits, sums, feedbacks)
                    k = self._code_group([decoders[i] for i in tiles_in], table, offset, sharp[c][run], tau, low,
                                         high, shift, bounds_in)
                    out[c, order[run]] = k
                    if (by_class or by_mean) and c < n_ch - 1:
                        distances.append(scales.surprise(table, k, w, heaviest))
                    current[:, c] = patches.context_array(k * w)
                    if c == 0 and predictions is not None and n_ch > 1:  # G's and B's chroma predictions
                        scales.add_red(predictions, current[:, 0])
                    if made is not None:  # this channel's errors, for the pixels that neighbour these
                        value = MEAN_STEPS * current[:, c].astype(np.int64)
                        made[0, :, c] = value - (0 if sums is None else sums[:, c] >> least_squares.SHIFT)
                        made[1, :, c] = value - heaviest
                    if sums is not None and c < n_ch - 1:  # the later channels' least-squares terms
                        least_squares.add_current(sums, coefficients, tile_of[run], c, current[:, c])
                residuals.scatter(start, current, n_ch)
                if errors is not None:
                    errors.store(start, made)
                start = end
        bins = torch.from_numpy(out).reshape(n_ch, P, PATCH, PATCH).permute(1, 0, 2, 3)
        return [bins[a:b] for a, b in zip(first_patch[:-1], first_patch[1:])]

    def _red_table(self, red_head: IntegerHead, grey: np.ndarray, gathered: np.ndarray, feats: Tensor | None,
                   hidden: Tensor, skip: Tensor, current: np.ndarray) -> np.ndarray:
        """R's mixtures of a wavefront whose rows ``grey`` (their tiles': format 8) read R from the grey
        heads and the others from the colour heads: each head evaluated on its own rows (a row's
        mixtures depend on that row alone)."""
        device = hidden.device
        if grey.all():
            return red_head.plane_table(_first_channel(gathered, device), feats)
        picked = torch.from_numpy(grey).to(device)
        table = np.empty((len(grey), 3 * self.head.mixtures), dtype=np.int32)
        table[grey] = red_head.plane_table(_first_channel(gathered[grey], device),
                                           None if feats is None else feats[picked])
        colour = ~picked
        table[~grey] = self.head.channel_table(0, hidden[colour], skip[colour], current[~grey])
        return table

    # ------------------------------------------------------------------ one group of symbols
    @staticmethod
    def _code_group(coders: Sequence[SymbolDecoder], table: np.ndarray, scale_offset: np.ndarray,
                    sharpness: np.ndarray, tau: int, lo: np.ndarray, hi: np.ndarray, mean_shift: np.ndarray | None,
                    segments: np.ndarray) -> np.ndarray:
        """Decode one channel of one wavefront of one or more tiles and return its bins; ``table``:
        the integer mixtures ``[n, 3K]`` (:class:`ChannelParams`), ``scale_offset``: each symbol's
        log-scale offset, ``sharpness``: each symbol's tile's mixture sharpness of the channel,
        ``mean_shift``: each symbol's shift of its means (1/MEAN_STEPS pixel, format 6; None:
        none); ``segments``: where each tile's symbols start (and the end), ``coders``: their streams.

        One plan for all the tiles; then, from each tile's stream, the window step (one range-coder
        call per window width, ascending) and the escape step (the symbols outside their window, one
        call per span width), as :class:`_ChannelPlan` encodes a tile's symbols.
        """
        plan = plan_group(table, tau, lo, hi, scale_offset, sharpness, mean_shift, segments)
        out = np.zeros(len(lo), dtype=np.int64)
        for seg, idx, pmf in plan.windows.segment_tables():
            out[idx] = plan.first[idx] + coders[seg].decode(pmf)
        escaped = np.flatnonzero(out >= plan.first + plan.width)
        if len(escaped):
            for seg, idx, pmf in plan_escapes(plan, escaped, lo, hi).segment_tables():
                out[idx] = lo[idx] + coders[seg].decode(pmf)
        if bool(((out < lo) | (out > hi)).any()):
            raise BitstreamError("residual stream decodes outside the feasible range")
        return out


def _first_channel(gathered: np.ndarray, device: torch.device) -> Tensor:
    """The first channel of gathered taps ``[n, taps*3]`` (tap, rgb order): ``[n, taps]``, the plane a
    grey image's or a format 8 tile's R is read from."""
    return torch.from_numpy(np.ascontiguousarray(gathered[:, 0::CHANNELS])).to(device)


def _rows(table: np.ndarray, take: np.ndarray | None) -> np.ndarray:
    """The rows ``take`` of a mixture table ``[..., 3K]`` flattened to ``[n, 3K]`` (all: None)."""
    rows = table.reshape(-1, table.shape[-1])
    return rows if take is None else rows[take]


def _phase_offsets(offsets: list[np.ndarray], per_tile: np.ndarray | None, order: np.ndarray,
                   tile_of: np.ndarray | int) -> list[np.ndarray]:
    """Each channel's log-scale offsets of the symbols in decoding ``order`` plus their phase's in
    their tile (``per_tile`` ``[tiles, c, PHASES]``, ``tile_of``: each symbol's tile, or one for all;
    None: no tile has any, the offsets as they are): format 11, the encoder's and decoder's."""
    if per_tile is None:
        return offsets
    phase = scales.phase_of(order, PATCH)
    return [off + per_tile[tile_of, c, phase] for c, off in enumerate(offsets)]


def _joined_phases(tiles: Sequence[TileStream], channels: int) -> np.ndarray | None:
    """The phase offsets of tiles decoded together ``[tiles, c, PHASES]`` (zero for a tile without;
    None: no tile has any)."""
    if all(t.phases is None for t in tiles):
        return None
    return np.stack([np.zeros((channels, scales.PHASES), dtype=np.int64) if t.phases is None else t.phases
                     for t in tiles])


def _joined_offsets(tiles: Sequence[TileStream], channels: int) -> np.ndarray | None:
    """The per-patch log-scale offsets of tiles decoded together ``[P, c]`` (None: all zero)."""
    if all(t.scale_offsets is None for t in tiles):
        return None
    return np.concatenate([np.zeros((t.patches.valid.shape[0], channels), dtype=np.int64)
                           if t.scale_offsets is None else t.scale_offsets for t in tiles])


def _symbol_offsets(per_patch: np.ndarray | None, order: np.ndarray, patches: Patches) -> list[np.ndarray]:
    """Each channel's log-scale offset of every symbol, in decoding order."""
    if per_patch is None:
        return [np.zeros(len(order), dtype=np.int64)] * patches.channels
    patch = order // (PATCH * PATCH)
    return [np.ascontiguousarray(per_patch[patch, c], dtype=np.int64) for c in range(patches.channels)]


@dataclass
class _ChannelPlan:
    """One channel of a few wavefronts planned for the encoder in one go.

    A symbol's window, table and escape table depend on its own mixture only, so planning several
    wavefronts at once gives each one's tables; each width class lists its symbols in ascending
    order, so a wavefront's part of it is one contiguous slice (``cuts``).  Planning per wavefront,
    as the decoder must, cost the encoder more in per-call NumPy work than in the tables; planning a
    whole tile at once, tens of MB of tables, ran out of the CPU's caches (PLAN_STEPS).  The symbols
    are kept in each class's order, ready for the range coder: :meth:`emit` runs some 4,000 times a
    megapixel, and its indexing and conversions per call had cost more than the coding in it."""

    windows: Classes
    window_symbols: np.ndarray  # int32 in the windows' order: bin minus window start, the width for an escape
    window_cuts: list[list[int]]  # [classes][steps + 1]: where each wavefront starts in each class
    escapes: Classes
    escape_symbols: np.ndarray  # int32 in the escapes' order: bin minus the first feasible bin
    escape_cuts: list[list[int]]

    @classmethod
    def of(cls, table: np.ndarray, scale_offset: np.ndarray, sharpness: int, tau: int, lo: np.ndarray,
           hi: np.ndarray, bins: np.ndarray, steps: np.ndarray, mean_shift: np.ndarray | None = None,
           rows: np.ndarray | None = None) -> _ChannelPlan:
        """Symbols in decoding order: mixtures ``table`` ``[n, 3K]`` (``rows``: theirs among its rows,
        None: all in order), log-scale offsets, the channel's sharpness, feasible bins, bins;
        ``steps``: where each wavefront starts among them (and the end); ``mean_shift``: each
        symbol's shift of its means (format 6)."""
        plan = plan_group(table, tau, lo, hi, scale_offset, sharpness, mean_shift, rows=rows)
        local = bins - plan.first
        inside = (local >= 0) & (local < plan.width)
        escapes = plan_escapes(plan, np.flatnonzero(~inside), lo, hi)

        def cuts(classes: Classes) -> list[list[int]]:
            return [np.searchsorted(classes.order[at : at + count], steps).tolist()
                    for _, at, count, _, _ in classes.runs]

        window_symbols = np.where(inside, local, plan.width)[plan.windows.order].astype(np.int32)
        escape_symbols = (bins - lo)[escapes.order].astype(np.int32)
        return cls(plan.windows, window_symbols, cuts(plan.windows), escapes, escape_symbols, cuts(escapes))

    def emit(self, enc: SymbolEncoder, step: int) -> None:
        """Encode wavefront ``step``'s symbols of this channel: windows by width, then escapes."""
        for classes, symbols, cuts in ((self.windows, self.window_symbols, self.window_cuts),
                                       (self.escapes, self.escape_symbols, self.escape_cuts)):
            for (cols, at, _, off, _), run_cuts in zip(classes.runs, cuts):
                a, b = run_cuts[step], run_cuts[step + 1]
                if b > a:
                    masses = classes.masses[off + a * cols : off + b * cols]
                    enc.encode(symbols[at + a : at + b], masses.reshape(b - a, cols))


@dataclass
class _ResidualBuffer:
    """The decoded residuals, in one zero-bordered plane per patch with the three channels of a
    pixel side by side; each wavefront's context taps are one compiled gather from it (torch's
    advanced indexing, and NumPy's, cost more than the network at these sizes).  Channels side by
    side, a tap's three values are one short contiguous read: the gather ran 3x faster than from
    one plane per channel."""

    buffer: np.ndarray  # [P * side * side * 3]
    where: np.ndarray  # [N] position of each pixel of the decoding order (its first channel)
    taps_at: np.ndarray  # [taps] offsets of the context taps from a pixel

    @classmethod
    def of(cls, order: np.ndarray, patches: int, halo: int, taps: Sequence[tuple[int, int]]) -> _ResidualBuffer:
        """For the pixels ``order`` (flat indices into ``[patches, 64, 64]``, decoding order)."""
        size, where, taps_at = _layout(order, patches, halo, taps, CHANNELS)
        return cls(np.zeros(size, dtype=np.float32), where, taps_at)

    def gather(self, start: int, end: int) -> np.ndarray:
        """``[end-start, taps*3]`` context of pixels ``start..end-1``, in (tap, rgb) order."""
        return _gather_taps(self.buffer, self.where, self.taps_at, start, end)

    def scatter(self, start: int, values: np.ndarray, coded: int) -> None:
        """Store the residuals ``values`` ``[n, 3]`` of pixels ``start..`` (``coded`` = 1: a grey
        image, its channel into all three)."""
        _scatter_residuals(self.buffer, self.where, start, values, coded)


@dataclass
class _ErrorBuffer:
    """Each decoded pixel's two errors per channel (format 9's feedback sources: from its
    least-squares prediction and from the network's mean, 1/MEAN_STEPS pixel), laid out as
    :class:`_ResidualBuffer`'s residuals (zero-bordered planes per patch, a pixel's values side by
    side), so that a wavefront's :func:`scales.feedback` is one compiled gather."""

    buffer: np.ndarray  # [P * side * side * 2 * 3] int32 (|error| < 2**24: int16 coefficients, bounded residuals)
    where: np.ndarray  # [N] position of each pixel of the decoding order
    taps_at: np.ndarray  # [len(FEEDBACK_TAPS)] offsets of the neighbours from a pixel

    @classmethod
    def of(cls, order: np.ndarray, patches: int, halo: int) -> _ErrorBuffer:
        """For the pixels ``order`` (flat indices into ``[patches, 64, 64]``, decoding order)."""
        size, where, taps_at = _layout(order, patches, halo, scales.FEEDBACK_TAPS, 2 * CHANNELS)
        return cls(np.zeros(size, dtype=np.int32), where, taps_at)

    def feedback(self, start: int, end: int, channels: int) -> np.ndarray:
        """:func:`scales.feedback` of pixels ``start..end-1``, both errors: ``[2, n, channels]``."""
        return _feedback(self.buffer, self.where, self.taps_at, start, end, channels, scales.FEEDBACK_SCALE)

    def store(self, start: int, errors: np.ndarray) -> None:
        """Store the errors ``[2, n, channels]`` of pixels ``start..``."""
        _store_errors(self.buffer, self.where, start, errors)


def _layout(order: np.ndarray, patches: int, halo: int, taps: Sequence[tuple[int, int]],
            width: int) -> tuple[int, np.ndarray, np.ndarray]:
    """A decoder buffer of ``width`` values a pixel in zero-bordered planes per patch: its size,
    where each pixel of ``order`` starts, and the offsets of its ``taps`` from a pixel."""
    side = PATCH + 2 * halo
    patch, pix = order // (PATCH * PATCH), order % (PATCH * PATCH)
    where = (patch * side * side + (pix // PATCH + halo) * side + pix % PATCH + halo) * width
    taps_at = np.array([(di * side + dj) * width for di, dj in taps], dtype=np.int64)
    return patches * side * side * width, where, taps_at


@numba.njit(cache=True, nogil=True)
def _feedback(buffer, where, taps_at, start, end, channels, scale):  # pragma: no cover - compiled
    out = np.zeros((2, end - start, channels), dtype=np.int64)
    for i in range(start, end):
        for t in range(taps_at.shape[0]):
            at = where[i] + taps_at[t]
            for k in range(2):
                for c in range(channels):
                    out[k, i - start, c] += buffer[at + 3 * k + c]
    return scale * out


@numba.njit(cache=True, nogil=True)
def _store_errors(buffer, where, start, errors):  # pragma: no cover - compiled
    for j in range(errors.shape[1]):
        at = where[start + j]
        for k in range(2):
            for c in range(errors.shape[2]):
                buffer[at + 3 * k + c] = errors[k, j, c]


@numba.njit(cache=True, nogil=True)
def _wavefront_order(valid, pixels, starts):  # pragma: no cover - compiled
    """Wavefront by wavefront (``pixels[starts[s]:starts[s+1]]``), patch by patch, the flat index of
    every pixel ``valid`` ``[P, S*S]`` marks; and where each wavefront's run ends."""
    P, area = valid.shape
    order = np.empty(P * area, dtype=np.int64)
    ends = np.empty(starts.shape[0] - 1, dtype=np.int64)
    n = 0
    for s in range(starts.shape[0] - 1):
        for p in range(P):
            for j in range(starts[s], starts[s + 1]):
                if valid[p, pixels[j]]:
                    order[n] = p * area + pixels[j]
                    n += 1
        ends[s] = n
    return order[:n], ends


@numba.njit(cache=True, nogil=True)
def _gather_taps(buffer, where, taps_at, start, end):  # pragma: no cover - compiled
    """``[end-start, taps*3]`` context of pixels ``start..end-1`` of the decoding order, in (tap, rgb)
    order: ``buffer[where[i] + taps_at[t] + c]``."""
    n_taps = taps_at.shape[0]
    out = np.empty((end - start, n_taps * 3), dtype=np.float32)
    for i in range(start, end):
        row = out[i - start]
        for t in range(n_taps):
            at = where[i] + taps_at[t]
            row[3 * t] = buffer[at]
            row[3 * t + 1] = buffer[at + 1]
            row[3 * t + 2] = buffer[at + 2]
    return out


@numba.njit(cache=True, nogil=True)
def _scatter_residuals(buffer, where, start, values, n_coded):  # pragma: no cover - compiled
    """Store the decoded residuals ``values`` ``[N, 3]`` of pixels ``start..`` (a grey image: its one
    channel into all three)."""
    for j in range(values.shape[0]):
        at = where[start + j]
        for c in range(3):
            buffer[at + c] = values[j, c if n_coded == 3 else 0]
