"""The residual network in integer arithmetic: what decides every probability in a file.

Float results depend on summation order, so they change with the thread count, the SIMD kernels
(``ATEN_CPU_CAPABILITY``) and the device; a decoder that computes a probability one ulp away from
the encoder's loses the file.  Here every weight, bias and activation is an integer, and each
layer's accumulator is proven (per output channel, from the weights and the activation limits) to
stay below 2**24: float32 then represents every partial sum exactly, so a matrix product gives
the same integers in any order, on any CPU or GPU (Ballé et al., "Integer networks for data
compression", ICLR 2019, do the same with int32).  Rescaling between layers only multiplies by
powers of two, which is exact too.

The integer network is derived from the float one deterministically: weights are rounded per
output channel at a power-of-two scale, activation scales come from calibration and are stored in
the model file (:func:`calibrate`).  The outputs are integer mixture parameters (means in 1/16
pixel, log-scales on a 1/16 grid, logits in 1/8) that :mod:`nlic.entropy.pmf` turns into
integer probability tables.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nlic.compiled import numba
from nlic.residual.mixture import LOG_SCALE_MAX, LOG_SCALE_MIN, MEAN_SCALE
from nlic.residual.network import CHANNELS, CONTEXT_SCALE, MAX_CONDITIONED_TAU, ContextHead, ResidualNetwork

#: version of the integer network's definition (the constants below, the rounding rules); stored
#: with the calibration, so a model file names the arithmetic its files were coded with
INTEGER_FORMAT = 1
#: every accumulator stays at or below this magnitude: float32 holds all integers up to 2**24
EXACT_LIMIT = 2**24
#: largest weight magnitude (12 bits); a channel whose accumulator bound fails gets a coarser scale
WEIGHT_MAX = 4095
#: activations are integers in [0, ACT_MAX] (12 bits), the linear mean predictions in +-ACT_MAX
ACT_MAX = 4095
#: mean unit: 1/MEAN_STEPS pixel
MEAN_STEPS = 16
#: log-scale unit 1/LOG_SCALE_STEPS (natural log); index 0 is LOG_SCALE_MIN
LOG_SCALE_STEPS = 16
LOG_SCALE_LEVELS = int((LOG_SCALE_MAX - LOG_SCALE_MIN) * LOG_SCALE_STEPS) + 1
#: logit unit 1/LOGIT_STEPS
LOGIT_STEPS = 8
MEAN_LIMIT = 2**14
#: bits of headroom of the output layers: room for per-tile adapted weights (nlic.coding.adaptation)
OUTPUT_HEADROOM = 1
LOGIT_LIMIT = 2**10


def shift_round(x: Tensor, shift: Tensor | int, low: float, high: float) -> Tensor:
    """``clamp(round(x * 2**shift), low, high)``, halves up; ``shift`` may be per channel (last axis).

    Exact for integer ``x`` below 2**24 whatever the order of operations: ``x * 2**shift`` is exact
    (a power of two), and where adding 0.5 rounds (beyond 2**23) the result lies far outside
    ``[low, high]`` (|low|, |high| < 2**23) and is clamped to the same value either way.
    """
    scale = torch.exp2(torch.as_tensor(shift, dtype=x.dtype, device=x.device))
    return torch.floor(torch.addcmul(torch.full((), 0.5, dtype=x.dtype, device=x.device), x, scale)).clamp_(low, high)


@dataclass
class Requantizer:
    """:func:`shift_round` of every column of an accumulator at once, with per-column power-of-two
    scales and limits precomputed (then minus ``offset``): one product, three in-place passes.

    Same integers as :func:`shift_round` column by column (the product by a power of two is exact).
    """

    scale: Tensor  # [n] float32, 2**shift
    low: Tensor  # [n]
    high: Tensor  # [n]
    offset: Tensor | None = None  # [n], subtracted after clamping

    @classmethod
    def of(cls, shift: Tensor, low: Sequence[float] | float, high: Sequence[float] | float,
           offset: Sequence[float] | None = None) -> Requantizer:
        """On ``shift``'s device."""
        n = shift.shape[0]
        vec = lambda v: torch.as_tensor(v, dtype=torch.float32).expand(n).clone().to(shift.device)  # noqa: E731
        return cls(torch.exp2(shift.float()), vec(low), vec(high), None if offset is None else vec(offset))

    def __post_init__(self) -> None:
        if self.scale.device.type == "cpu":  # NumPy views of the same memory, for the compiled path
            zero = torch.zeros_like(self.scale) if self.offset is None else self.offset
            self._arrays = tuple(t.numpy() for t in (self.scale, self.low, self.high, zero))

    def to(self, device: torch.device | str) -> Requantizer:
        return Requantizer(self.scale.to(device), self.low.to(device), self.high.to(device),
                           None if self.offset is None else self.offset.to(device))

    def __call__(self, acc: Tensor) -> Tensor:
        """Requantize ``acc`` in place (callers pass a fresh accumulator) and return it.

        On the CPU one compiled pass over the rows: the decoder requantizes eight small blocks per
        wavefront, where torch's four passes cost more in dispatch than in arithmetic.  The same
        float32 operations either way (see :func:`_requantize`)."""
        if acc.device.type == "cpu" and acc.dtype == torch.float32:
            try:
                rows = acc.view(-1, acc.shape[-1])  # (a view: the leading dimensions flatten)
            except RuntimeError:
                rows = None
            if rows is not None:
                _requantize(rows.numpy(), *self._arrays)
                return acc
        y = acc.mul_(self.scale).add_(0.5).floor_().clamp_(min=self.low, max=self.high)
        return y if self.offset is None else y.sub_(self.offset)


@numba.njit(cache=True, nogil=True)
def _requantize(acc, scale, low, high, offset):  # pragma: no cover - compiled
    """``acc = clamp(floor(acc * scale + 0.5), low, high) - offset`` per column, in place, float32
    throughout like the torch path (``acc * scale`` is exact: a power of two)."""
    half = np.float32(0.5)
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            v = np.floor(acc[i, j] * scale[j] + half)
            acc[i, j] = min(max(v, low[j]), high[j]) - offset[j]


#: rows of a block of :func:`_channel_head`: its hidden activations (32 x 256 float32) stay in L1
CHANNEL_BLOCK = 256
#: every partial sum of a layer is an integer within its bound (<= EXACT_LIMIT), so float32 sums are
#: exact in any order and products exact with or without fused multiply-adds: the compiler may
#: reorder and fuse them freely (the same integers)
EXACT_SUM_FLAGS = {"reassoc", "contract"}


@numba.njit(cache=True, nogil=True, fastmath=EXACT_SUM_FLAGS)
def _channel_head(hidden, at, width, current, n_cur, skip, c, current_in, scale_in, low_in, high_in, weight, bias,
                  scale_out, low_out, high_out, offset_out, out):  # pragma: no cover - compiled
    """One channel's hidden layer (``hidden[:, at:at+width]`` plus the current channels' columns,
    requantized) and output layer (``weight`` over ``[z, current[:, :n_cur], skip[:, c]]``,
    requantized minus ``offset_out``) into ``out`` (int32): :func:`_requantize`'s float32 operations
    on sums that are exact in any order.  Column by column over a block of rows, so that the inner
    loops run along rows (SIMD) rather than along a sum, whose order float32 must keep."""
    n = hidden.shape[0]
    half = np.float32(0.5)
    z = np.empty((width, CHANNEL_BLOCK), dtype=np.float32)
    cur = np.empty((n_cur, CHANNEL_BLOCK), dtype=np.float32)
    acc = np.empty(CHANNEL_BLOCK, dtype=np.float32)
    for first in range(0, n, CHANNEL_BLOCK):
        m = min(CHANNEL_BLOCK, n - first)
        for i in range(m):
            for j in range(width):
                z[j, i] = hidden[first + i, at + j]
            for k in range(n_cur):
                cur[k, i] = current[first + i, k]
        for j in range(width):
            row = z[j]
            for k in range(n_cur):
                wk = current_in[k, j]
                ck = cur[k]
                for i in range(m):
                    row[i] += ck[i] * wk
            s, lo, hi = scale_in[j], low_in[j], high_in[j]
            for i in range(m):
                row[i] = min(max(np.floor(row[i] * s + half), lo), hi)
        for o in range(out.shape[1]):
            b = bias[o]
            ws = weight[o, width + n_cur]
            for i in range(m):
                acc[i] = b + skip[first + i, c] * ws
            for j in range(width):
                wj = weight[o, j]
                row = z[j]
                for i in range(m):
                    acc[i] += row[i] * wj
            for k in range(n_cur):
                wk = weight[o, width + k]
                ck = cur[k]
                for i in range(m):
                    acc[i] += ck[i] * wk
            s, lo, hi, off = scale_out[o], low_out[o], high_out[o], offset_out[o]
            for i in range(m):
                out[first + i, o] = np.int32(min(max(np.floor(acc[i] * s + half), lo), hi) - off)


_exact_lock = threading.Lock()
_exact_depth = 0
_exact_saved: tuple[bool, bool, bool] = (False, False, True)


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """IEEE float32 in matrix products and convolutions on GPUs: no TF32 (10-bit mantissa), and no
    cuDNN convolutions (its Winograd and FFT algorithms are not exact even on integers; without it
    a convolution is an im2col matrix product).  CPU arithmetic is IEEE float32 already.

    The flags are process-wide: nested and concurrent uses (tiles coded on several threads) share
    one setting, restored when the last one leaves."""
    global _exact_depth, _exact_saved
    cuda = torch.backends.cuda.matmul
    cudnn = torch.backends.cudnn
    with _exact_lock:
        if _exact_depth == 0:
            _exact_saved = (cuda.allow_tf32, cudnn.allow_tf32, cudnn.enabled)
            cuda.allow_tf32 = False
            cudnn.allow_tf32 = False
            cudnn.enabled = False
        _exact_depth += 1
    try:
        yield
    finally:
        with _exact_lock:
            _exact_depth -= 1
            if _exact_depth == 0:
                cuda.allow_tf32, cudnn.allow_tf32, cudnn.enabled = _exact_saved


@dataclass
class IntLinear:
    """``acc = W x + b`` over integer inputs, with ``acc * 2**exponent`` ~ the float layer's output.

    Built by :meth:`of`: inputs come in groups, each with its own unit (``value = int * 2**unit``)
    and magnitude limit; the weight of each output row is scaled by a power of two chosen so that
    ``sum |w| * limit + |b| <= EXACT_LIMIT`` (the proof that float32 sums are exact).
    """

    weight: Tensor  # [out, in], integer-valued float32
    bias: Tensor  # [out]
    exponent: Tensor  # [out], int: acc * 2**exponent is the float output

    def to(self, device: torch.device | str) -> IntLinear:
        return IntLinear(self.weight.to(device), self.bias.to(device), self.exponent.to(device))

    @classmethod
    def of(cls, weight: Tensor, bias: Tensor | None, units: Sequence[int], limits: Sequence[int],
           headroom: int = 0) -> IntLinear:
        """``weight`` ``[out, in]``; ``units``/``limits`` per input column.  ``headroom`` bits are left
        below both limits (weights and accumulator), for per-tile adaptation to grow into."""
        w = weight.detach().double().cpu().numpy()
        b = np.zeros(w.shape[0]) if bias is None else bias.detach().double().cpu().numpy()
        units_a = np.asarray(units, dtype=np.float64)
        limits_a = np.asarray(limits, dtype=np.float64)
        scaled = w * np.exp2(units_a)[None, :]  # weight per integer input unit
        biggest = np.abs(scaled).max(axis=1)
        # finest power-of-two step that keeps every weight within WEIGHT_MAX
        weight_max, exact_limit = WEIGHT_MAX >> headroom, EXACT_LIMIT >> headroom
        exponent = np.where(biggest > 0, np.ceil(np.log2(np.maximum(biggest, 1e-300) / weight_max)), -30.0)
        exponent = np.maximum(exponent, -30.0)
        for _ in range(64):
            w_int = np.round(scaled * np.exp2(-exponent)[:, None])
            b_int = np.round(b * np.exp2(-exponent))
            bound = np.abs(w_int) @ limits_a + np.abs(b_int)
            over = (bound > exact_limit) | (np.abs(w_int).max(axis=1) > weight_max)
            if not over.any():
                break
            exponent = exponent + over
        else:  # pragma: no cover - a bias alone beyond 2**24 * 2**64
            raise ValueError("layer cannot be represented exactly")
        return cls(torch.from_numpy(w_int).float(), torch.from_numpy(b_int).float(),
                   torch.from_numpy(exponent).long())

    def bound(self, limits: Sequence[int]) -> np.ndarray:
        """Largest possible accumulator magnitude per output (<= EXACT_LIMIT by construction)."""
        return (self.weight.abs().double().cpu().numpy() @ np.asarray(limits, dtype=np.float64)
                + self.bias.abs().double().cpu().numpy())

    def __call__(self, *parts: Tensor) -> Tensor:
        """``W [parts...] + b``: the inputs as consecutive column blocks.  One product per block
        added up, not one product of the concatenated inputs: copying the blocks together cost more
        than the extra small products, and every partial sum lies within the layer's bound, so the
        integers are the same in any order."""
        bias, *blocks = self._blocks(tuple(p.shape[-1] for p in parts))
        out = F.linear(parts[0], blocks[0], bias)
        for part, block in zip(parts[1:], blocks[1:]):
            if part.shape[-1]:
                out.add_(torch.matmul(part, block))
        rows = self.weight.shape[0]
        return out if out.shape[-1] == rows else out[..., :rows]

    def _blocks(self, widths: tuple[int, ...]) -> list[Tensor]:
        """The bias and the weight's column blocks for inputs of ``widths`` (the first ``[out, w0]``
        for ``F.linear``, the others transposed ``[w, out]`` for ``matmul``), contiguous, cached.
        Outputs are padded with zero rows to a multiple of 8: products with 9 or 67 outputs ran 3x
        and 1.2x slower than with 16 or 72 on the CPU; the padding is sliced off."""
        cache = self.__dict__.setdefault("_block_cache", {})
        if widths not in cache:
            if sum(widths) != self.weight.shape[1]:
                raise ValueError(f"inputs of widths {widths} for a layer of {self.weight.shape[1]} inputs")
            pad = -self.weight.shape[0] % 8
            weight = F.pad(self.weight, (0, 0, 0, pad))
            bounds = np.cumsum((0, *widths))
            cache[widths] = [F.pad(self.bias, (0, pad)), weight[:, bounds[0] : bounds[1]].contiguous()] + [
                weight[:, a:b].t().contiguous() for a, b in zip(bounds[1:-1], bounds[2:])]
        return cache[widths]


@dataclass
class ChannelParams:
    """Integer mixture parameters of one channel as one table ``[..., 3K]`` (int32): K logits (unit
    1/LOGIT_STEPS), K means (1/MEAN_STEPS pixel), K log-scale indices (LOG_SCALE_STEPS grid, 0 =
    LOG_SCALE_MIN).  One row per symbol: the coder reads a symbol's parameters from one cache line
    (three separate int64 arrays read in decoding order cost a cache miss each)."""

    table: Tensor

    @property
    def mixtures(self) -> int:
        return self.table.shape[-1] // 3

    def field(self, i: int) -> Tensor:
        """Logits (0), means (1) or log-scales (2), ``[..., K]`` int64."""
        K = self.mixtures
        return self.table[..., i * K : (i + 1) * K].long()

    @property
    def logits(self) -> Tensor:
        return self.field(0)

    @property
    def means(self) -> Tensor:
        return self.field(1)

    @property
    def log_scales(self) -> Tensor:
        return self.field(2)


def _film_folded(head: ContextHead, layer: int, tau_index: int | None, weight: Tensor, bias: Tensor,
                 rows: slice | None = None) -> tuple[Tensor, Tensor]:
    """Fold the tau head's per-tau modulation ``h * (1 + s) + b`` into a layer's weight and bias."""
    if tau_index is None or not head.num_taus:
        return weight, bias
    film = head.film[layer]
    scale = 1.0 + film.scale[tau_index].detach()
    shift = film.bias[tau_index].detach()
    if rows is not None:
        weight, bias = weight.clone(), bias.clone()
        weight[rows] = weight[rows] * scale[:, None]
        bias[rows] = bias[rows] * scale + shift
        return weight, bias
    return weight * scale[:, None], bias * scale + shift


class IntegerHead:
    """One :class:`~nlic.residual.network.ContextHead` (at one tau) in integer arithmetic.

    ``units`` are the calibrated activation exponents (see :func:`calibrate`); ``residual_limit``
    bounds the residual magnitudes the network reads (255, or 128 without a lossy layer).
    """

    def __init__(self, head: ContextHead, units: dict[str, int], tau_index: int | None,
                 residual_limit: int = 255) -> None:
        self.context_channels = C = head.context_channels
        self.mixtures = head.mixtures
        self.offsets = list(head.taps)
        self.taps = len(head.taps)
        self.channel_conditioning = head.channel_conditioning
        self.units = dict(units)
        R = self.residual_limit = residual_limit
        n_in = 3 * self.taps
        with torch.no_grad():
            w0 = head.tap_weight().detach() / CONTEXT_SCALE
            self.feature_channels = 0
            units_in, limits_in = [0] * n_in, [R] * n_in
            if head.features_in is not None:  # lossy features: integers of unit 2**units["features"]
                wf = head.features_in.weight.detach()
                self.feature_channels = wf.shape[1]
                w0 = torch.cat([w0, torch.cat([wf, torch.zeros(CHANNELS, wf.shape[1])])], 1)
                units_in += [units["features"]] * wf.shape[1]
                limits_in += [ACT_MAX] * wf.shape[1]
            w0, b0 = _film_folded(head, 0, tau_index, w0, head.context_bias.detach(), rows=slice(0, C))
            self.context = IntLinear.of(w0, b0, units_in, limits_in)
            u_ctx, u_skip = units["context"], units["skip"]
            self.trunk: list[IntLinear] = []
            u_prev = u_ctx
            for i, lin in enumerate(head.trunk):
                w, b = _film_folded(head, i + 1, tau_index, lin.weight, lin.bias)
                self.trunk.append(IntLinear.of(w, b, [u_prev] * w.shape[1], [ACT_MAX] * w.shape[1]))
                u_prev = units[f"trunk{i}"]
            self.trunk_unit = u_prev
            self.channel_in: list[IntLinear] = []
            self.channel_out: list[IntLinear] = []
            for c in range(CHANNELS):
                n_cur = c if self.channel_conditioning else 0
                w, b = _film_folded(head, 1 + len(head.trunk) + c, tau_index, head.channel_in[c].weight,
                                    head.channel_in[c].bias)
                # cur inputs are raw residuals; the float layer reads them divided by CONTEXT_SCALE
                w = torch.cat([w[:, : w.shape[1] - n_cur], w[:, w.shape[1] - n_cur :] / CONTEXT_SCALE], 1)
                hidden = w.shape[1] - n_cur
                self.channel_in.append(IntLinear.of(w, b, [u_prev] * hidden + [0] * n_cur,
                                                    [ACT_MAX] * hidden + [R] * n_cur))
                self.channel_out.append(self._output_layer(head, c, n_cur, units[f"channel{c}"], u_skip, R))
        self._kernel = self._conv_kernel(head.kernel)
        self.device = torch.device("cpu")
        self._build_derived()

    def _build_derived(self) -> None:
        """What every call would otherwise recompute, on the layers' device: per-column scales and
        limits of every layer's output, the channels' joint hidden layer."""
        C, u = self.context_channels, self.units
        e = self.context.exponent
        n_skip = e.shape[0] - C
        self._context_q = Requantizer.of(torch.cat([e[:C] - u["context"], e[C:] - u["skip"]]),
                                         [0.0] * C + [-ACT_MAX] * n_skip, ACT_MAX)
        self._trunk_q = [Requantizer.of(lin.exponent - u[f"trunk{i}"], 0, ACT_MAX) for i, lin in enumerate(self.trunk)]
        self._channel_q = [Requantizer.of(lin.exponent - u[f"channel{c}"], 0, ACT_MAX)
                           for c, lin in enumerate(self.channel_in)]
        self._out_q = [self._mixture_requantizer(lin.exponent) for lin in self.channel_out]
        # every channel's hidden layer reads the same trunk features: one product serves the three
        # (the decoder has it before any channel of the pixel is known); each channel then adds its
        # current-channel columns
        n_cur = [c if self.channel_conditioning else 0 for c in range(CHANNELS)]
        width = [lin.weight.shape[1] - k for lin, k in zip(self.channel_in, n_cur)]
        self._hidden = IntLinear(torch.cat([lin.weight[:, :w] for lin, w in zip(self.channel_in, width)]),
                                 torch.cat([lin.bias for lin in self.channel_in]),
                                 torch.cat([lin.exponent for lin in self.channel_in]))
        self._hidden_at = np.cumsum([0] + [lin.weight.shape[0] for lin in self.channel_in]).tolist()
        self._current_in = [lin.weight[:, w:].t().contiguous() for lin, w in zip(self.channel_in, width)]
        self._compiled_channels = (None if self.device.type != "cpu" else [
            (self._current_in[c].numpy(), *self._channel_q[c]._arrays[:3],
             np.ascontiguousarray(self.channel_out[c].weight.numpy()), self.channel_out[c].bias.numpy(),
             *self._out_q[c]._arrays) for c in range(CHANNELS)])

    def to(self, device: torch.device | str) -> IntegerHead:
        """Run on ``device`` (the integers, hence the results, are the same everywhere)."""
        self.device = torch.device(device)
        self.context = self.context.to(device)
        self.trunk = [lin.to(device) for lin in self.trunk]
        self.channel_in = [lin.to(device) for lin in self.channel_in]
        self.channel_out = [lin.to(device) for lin in self.channel_out]
        self._kernel = self._kernel.to(device)
        self._build_derived()
        return self

    def _output_layer(self, head: ContextHead, c: int, n_cur: int, u_z: int, u_skip: int, R: int) -> IntLinear:
        """Mixture outputs from ``[z, current channels, linear mean prediction]``.

        The float head computes ``means = MEAN_SCALE * (raw_mean + skip)`` with
        ``skip = pre_skip + current_skip . cur / CONTEXT_SCALE``; here ``skip``'s two parts are
        extra inputs of the mean rows, so one exact product gives every output.
        """
        K = self.mixtures
        lin = head.channel_out[c]
        w = lin.weight.detach()
        extra = torch.zeros(3 * K, n_cur + 1)
        extra[K : 2 * K, :n_cur] = head.current_skip[c].detach()[None, :] / CONTEXT_SCALE
        extra[K : 2 * K, n_cur] = 1.0
        weight = torch.cat([w, extra], 1)
        units = [u_z] * w.shape[1] + [0] * n_cur + [u_skip]
        limits = [ACT_MAX] * w.shape[1] + [R] * n_cur + [ACT_MAX]
        return IntLinear.of(weight, lin.bias.detach(), units, limits, headroom=OUTPUT_HEADROOM)

    # ------------------------------------------------------------------ evaluation
    def quantize_features(self, features: Tensor) -> Tensor:
        """Lossy features (float) -> the integers the context layer reads (unit 2**units["features"]).

        They come from the lossy decoder's float arithmetic: exact across machines only where
        that decoder is (see docs/robustness.md); the residual network itself always is.
        """
        return shift_round(features.float(), -self.units["features"], -ACT_MAX, ACT_MAX)

    def context_gathered(self, taps: Tensor, features: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Gathered raw residuals ``[N, taps*3]`` (and integer features ``[N, F]``) -> (context
        activations, linear mean predictions)."""
        parts = (taps,) if features is None else (taps, features)
        acc = self.context(*parts) if sum(x.shape[-1] for x in parts) else self._bias_rows(taps.shape[0])
        return self._split_context(acc)

    def plane_table(self, taps: Tensor, features: Tensor | None = None) -> np.ndarray:
        """Channel 0's integer mixtures ``[N, 3K]`` of pixels whose context is one plane read in all
        three channels (as these heads read a grey image), from that plane's gathered raw residuals
        ``[N, taps]`` (and integer features ``[N, F]``): the integers of :meth:`context_gathered` on
        the taps repeated per channel, :meth:`channel_hidden` and :meth:`channel_table`, with each
        tap's three channel weights summed and only channel 0's block of the hidden layer (a third of
        those products; exact: the summed weights' magnitudes are within the three weights' together,
        which the layers' bounds cover)."""
        if self.taps == 0 or features is not None or self.context.weight.shape[1] != CHANNELS * self.taps:
            act, skip = self.context_gathered(taps.repeat_interleave(CHANNELS, dim=-1), features)  # (general path)
        else:
            summed = self.__dict__.get("_plane_weight")
            if summed is None or summed.device != self.context.weight.device:
                w = self.context.weight
                summed = self.__dict__["_plane_weight"] = w.reshape(w.shape[0], self.taps, CHANNELS).sum(-1)
            act, skip = self._split_context(F.linear(taps, summed, self.context.bias))
        hidden = self.channel_hidden(self.trunk_features(act), 1)
        return self.channel_table(0, hidden, skip, np.zeros((taps.shape[0], CHANNELS), dtype=np.float32))

    def context_full(self, r: Tensor, features: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Whole patches ``[P, 3, S, S]`` (raw residuals; integer features ``[P, S, S, F]``) ->
        ``[P, S, S, *]`` activations and linear mean predictions.

        The masked convolution is the same integer product as :meth:`context_gathered`, summed in
        another order: exact either way (the bound covers both parts together).
        """
        P, _, S, _ = r.shape
        n_taps = 3 * self.taps
        if self.taps == 0:
            acc = self._bias_rows(P * S * S).reshape(P, S, S, -1)
        else:
            # causal taps only: the kernel's rows above and at the pixel (the rows below are all
            # zero), padded above and at the sides; channels-last memory, so the channel-last view
            # the products read needs no copy
            h = self._kernel.shape[-1] // 2
            r = F.pad(r, (h, h, h, 0)).contiguous(memory_format=torch.channels_last)
            acc = F.conv2d(r, self._kernel, self.context.bias).permute(0, 2, 3, 1)
        if features is not None and self.feature_channels:
            acc = acc + F.linear(features, self.context.weight[:, n_taps:])
        return self._split_context(acc)

    def _bias_rows(self, n: int) -> Tensor:
        """The context layer's accumulators without taps: its bias, copied ``n`` times (the
        requantizers work in place)."""
        return self.context.bias.expand(n, -1).clone(memory_format=torch.contiguous_format)

    def _conv_kernel(self, size: int) -> Tensor:
        """The context weight as a masked convolution kernel: its ``size // 2 + 1`` causal rows
        (every tap lies above the pixel or left of it), ``size`` columns."""
        h = size // 2
        out = self.context.weight.shape[0]
        kernel = torch.zeros(out, CHANNELS, size, size)
        if self.taps:
            ii = torch.tensor([h + di for di, _ in self.offsets])
            jj = torch.tensor([h + dj for _, dj in self.offsets])
            taps = self.context.weight[:, : 3 * self.taps]
            kernel[:, :, ii, jj] = taps.reshape(out, self.taps, CHANNELS).permute(0, 2, 1)
        return kernel[:, :, : h + 1].contiguous(memory_format=torch.channels_last)

    def _split_context(self, acc: Tensor) -> tuple[Tensor, Tensor]:
        y = self._context_q(acc)
        return y[..., : self.context_channels], y[..., self.context_channels :]

    def trunk_features(self, act: Tensor) -> Tensor:
        h = act
        for lin, q in zip(self.trunk, self._trunk_q):
            h = q(lin(h))
        return h

    def channel_hidden(self, trunk: Tensor, channels: int = CHANNELS) -> Tensor:
        """The trunk's part of the hidden layer of the first ``channels`` channels (every channel's
        by default), ``[..., channels * hidden]`` accumulators: the argument ``hidden`` of
        :meth:`channel_inputs`."""
        if channels == CHANNELS:
            return self._hidden(trunk)
        end = self._hidden_at[channels]
        return F.linear(trunk, self._hidden.weight[:end], self._hidden.bias[:end])

    def channel_inputs(self, c: int, hidden: Tensor, skip: Tensor, current: Tensor) -> tuple[Tensor, ...]:
        """The inputs of channel ``c``'s output layer: ``(z, current channels, linear prediction)``;
        ``hidden``: :meth:`channel_hidden` of the trunk features (channel ``c``'s block of it is used
        up); ``current`` ``[..., 3]`` holds the raw residuals of this pixel (only those before ``c``
        read; their columns of the hidden layer are added here, the same integers in any order: every
        partial sum is within the layer's bound)."""
        cur = current[..., :c] if self.channel_conditioning else current[..., :0]
        acc = hidden[..., self._hidden_at[c] : self._hidden_at[c + 1]]
        if cur.shape[-1]:
            acc = acc + torch.matmul(cur, self._current_in[c])
        z = self._channel_q[c](acc)
        return z, cur, skip[..., c : c + 1]

    def channel_table(self, c: int, hidden: Tensor, skip: Tensor, current: np.ndarray) -> np.ndarray:
        """Channel ``c``'s integer mixtures ``[N, 3K]`` (int32) from the rows of :meth:`channel_hidden`,
        the linear mean predictions ``skip`` ``[N, 3]`` and this pixel's raw residuals so far
        ``current`` ``[N, 3]``: :meth:`channel_inputs` and :meth:`channel_output` (without an adapted
        layer) in one compiled pass on the CPU.  The decoder calls them three times a wavefront on a
        few thousand rows, where torch's dispatch of a dozen small operations cost more than the
        arithmetic; the same float32 integer sums (exact in any order), hence the same table."""
        if self._compiled_channels is None or hidden.device.type != "cpu":
            inputs = self.channel_inputs(c, hidden, skip, torch.from_numpy(current).to(hidden.device))
            return self.channel_output(c, inputs).table.cpu().numpy()
        n_cur = c if self.channel_conditioning else 0
        a, b = self._hidden_at[c], self._hidden_at[c + 1]
        out = np.empty((hidden.shape[0], 3 * self.mixtures), dtype=np.int32)
        _channel_head(hidden.numpy(), a, b - a, current, n_cur, skip.numpy(), c, *self._compiled_channels[c], out)
        return out

    def channel_output(self, c: int, inputs: tuple[Tensor, ...], layer: IntLinear | None = None) -> ChannelParams:
        """Integer mixture of channel ``c`` from its output-layer inputs (``layer``: this tile's
        adapted output layer, see :mod:`nlic.coding.adaptation`)."""
        if layer is None:
            return self._mixture(self._out_q[c](self.channel_out[c](*inputs)))
        return self.mixture_of(layer(*inputs), layer.exponent)

    def _mixture_requantizer(self, e: Tensor) -> Requantizer:
        """Output-layer accumulators (units ``2**e``) -> logits (1/LOGIT_STEPS), means (1/MEAN_STEPS
        pixel) and log-scale grid indices (0 = LOG_SCALE_MIN)."""
        K = self.mixtures
        shift = torch.cat([e[:K] + int(math.log2(LOGIT_STEPS)), e[K : 2 * K] + int(math.log2(MEAN_SCALE * MEAN_STEPS)),
                           e[2 * K :] + int(math.log2(LOG_SCALE_STEPS))])
        first = LOG_SCALE_MIN * LOG_SCALE_STEPS  # index 0 of the log-scale grid
        return Requantizer.of(shift, [-LOGIT_LIMIT] * K + [-MEAN_LIMIT] * K + [first] * K,
                              [LOGIT_LIMIT] * K + [MEAN_LIMIT] * K + [first + LOG_SCALE_LEVELS - 1] * K,
                              [0] * (2 * K) + [first] * K)

    @staticmethod
    def _mixture(y: Tensor) -> ChannelParams:
        return ChannelParams(y.to(torch.int32))  # integers within +-2**14

    def mixture_of(self, acc: Tensor, e: Tensor) -> ChannelParams:
        """Output-layer accumulators (units ``2**e``) -> integer mixture parameters."""
        return self._mixture(self._mixture_requantizer(e).to(acc.device)(acc))

    def channel_params(self, c: int, trunk: Tensor, skip: Tensor, current: Tensor,
                       layer: IntLinear | None = None) -> ChannelParams:
        """Integer mixture of channel ``c``; ``current`` ``[..., 3]`` raw residuals of this pixel."""
        return self.channel_output(c, self.channel_inputs(c, self.channel_hidden(trunk), skip, current), layer)

    def output_limits(self, c: int) -> list[int]:
        """Largest input magnitudes of channel ``c``'s output layer (its exactness bound)."""
        n_cur = c if self.channel_conditioning else 0
        n_z = self.channel_out[c].weight.shape[1] - n_cur - 1
        return [ACT_MAX] * n_z + [self.residual_limit] * n_cur + [ACT_MAX]


def head_key(tau: int, network: ResidualNetwork, gray: bool = False) -> str:
    """Name of the integer head (and of its calibration entry) that codes ``tau`` (of a grey image)."""
    _, index = network.head_for(tau, gray)
    prefix = "gray_" if gray and network.has_gray_heads else ""
    return prefix + ("plain" if index is None else f"tau{index + 1}")


def integer_head(network: ResidualNetwork, units: dict, tau: int, residual_limit: int,
                 gray: bool = False) -> IntegerHead:
    """The integer network that codes ``tau`` (``units``: the calibration, see :func:`calibrate`)."""
    if units.get("format") != INTEGER_FORMAT:
        raise ValueError(f"integer network format {units.get('format')!r} is not this nlic's ({INTEGER_FORMAT}): "
                         "export the model again with this nlic")
    head, index = network.head_for(tau, gray)
    return IntegerHead(head, units[head_key(tau, network, gray)], index, residual_limit)


def activation_unit(largest: float) -> int:
    """Power-of-two step that fits activations up to ``largest`` into [0, ACT_MAX]."""
    return int(math.ceil(math.log2(largest / ACT_MAX))) if largest > 0 else 0


#: calibrated activation maxima are multiplied by this: headroom for images unlike the calibration set
CALIBRATION_MARGIN = 1.5


@torch.no_grad()
def calibrate(network: ResidualNetwork, residuals: Sequence[Tensor], features: Sequence[Tensor | None] | None = None,
              taus: Sequence[int] = (0, 1, 2, 3, 4, 5),
              gray: Sequence[bool] | None = None) -> dict[str, dict[str, int]]:
    """Activation units of every head, from the float network's largest activations on
    ``residuals`` (each ``[1, 3, H, W]``, H and W multiples of 64, raw residuals) and the lossy
    features that go with them (``[1, F, H, W]``, or None).  The grey heads, if any, are
    calibrated on the residuals flagged in ``gray`` (grey images, R = G = B).

    The result goes into the model file: the integer network is a function of the weights and
    these units only, so every machine derives the same one.
    """
    from nlic.residual.patches import patchify
    from nlic.residual.quantizer import quantize_residual

    heads = {head_key(t, network): (t, False) for t in taus}
    if network.tau_head is not None:  # every conditioned head, whatever taus were asked for
        heads.update({f"tau{i}": (i, False) for i in range(1, MAX_CONDITIONED_TAU + 1)})
    if network.has_gray_heads:
        if gray is None or not any(gray):
            raise ValueError("calibrating grey heads needs grey residuals (flag them in gray=)")
        gray_taus = list(taus) + list(range(1, MAX_CONDITIONED_TAU + 1))
        heads.update({head_key(t, network, True): (t, True) for t in gray_taus})
    out = {}
    for key, (tau, for_gray) in heads.items():
        head, index = network.head_for(tau, for_gray)
        tau_index = None if index is None else torch.tensor([index])
        record: dict[str, float] = {}
        for i, r in enumerate(residuals):
            if for_gray and not gray[i]:
                continue
            patches = patchify(quantize_residual(r.float(), tau))
            pre = head.context_full(patches)
            feats = None if not features or features[i] is None else patchify(features[i].float())
            if feats is not None:
                feats = feats.permute(0, 2, 3, 1)
                record["features"] = max(record.get("features", 0.0), float(feats.abs().amax()))
            trunk = head.trunk_features(pre, feats, tau_index, record)
            current = patches.permute(0, 2, 3, 1)
            for c in range(CHANNELS):
                head.channel_params(c, trunk, pre, current, tau_index, record)
        out[key] = {name: activation_unit(CALIBRATION_MARGIN * value) for name, value in record.items()}
    out["format"] = INTEGER_FORMAT
    return out
