"""Per-tile log-scale offsets: one integer per channel added to every component's log-scale index.

The network is sharper or blunter than a photo unlike its training crops deserves: on the held-out
photos the chosen offsets went from -1.5 to +0.75 natural-log units (sharper on smooth skies at
tau >= 1, blunter on a noisy sky at tau = 0) and saved 1.9 % of the file at tau = 0 and 3.2 % at
tau = 2 (real bytes, model 2529f03cbba0eda8).  The encoder estimates, on a fixed sample of the
tile's symbols, the code length under each candidate offset (float arithmetic on the integer
mixtures: only the encoder computes it, the file stores the choice), keeps the best, and stores it
as one signed byte per channel; both sides add it to the integer log-scale indices before the
tables (exact).
"""

from __future__ import annotations

import numpy as np

from nlic.errors import BitstreamError
from nlic.residual.integer import LOG_SCALE_LEVELS, LOG_SCALE_MIN, LOG_SCALE_STEPS, LOGIT_STEPS, MEAN_STEPS

#: offsets searched, in log-scale grid steps (1/16 natural-log unit): -2 .. +1, first every
#: COARSE steps, then halving the step around the best (the estimate is smooth in the offset)
LOWEST, HIGHEST, COARSE = -32, 16, 4
#: symbols per channel the choice is estimated on (a fixed, evenly spaced sample)
SAMPLES = 4096
#: an offset is kept only when it saves at least this share of the channel's estimated bits
MIN_GAIN = 0.002


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


def choose(fields: list[tuple[np.ndarray, np.ndarray, np.ndarray]], symbols: list[np.ndarray],
           lo: list[np.ndarray], hi: list[np.ndarray], tau: int) -> tuple[list[int], float]:
    """The offset of each channel from a sample of its symbols, and the sample's estimated bits
    under them: ``fields[c]`` their mixtures (logits, means, log-scales ``[n, K]``),
    ``symbols``/``lo``/``hi`` ``[n]`` their bins and feasible bins."""
    offsets, total = [], 0.0
    for f, sym, low, high in zip(fields, symbols, lo, hi):
        bits = _CodeLength(*f, sym, low, high, tau)
        offsets.append(_best_offset(bits))
        total += bits(offsets[-1])
    return offsets, total


def _best_offset(bits: _CodeLength) -> int:
    """Coarse steps over the range, then halving steps around the best (the estimate is smooth in
    the offset); zero unless the best saves at least MIN_GAIN."""
    costs: dict[int, float] = {}

    def cost(o: int) -> float:
        if o not in costs:
            costs[o] = bits(o)
        return costs[o]

    best = min(range(LOWEST, HIGHEST + 1, COARSE), key=cost)
    step = COARSE // 2
    while step:
        best = min((o for o in (best - step, best, best + step) if LOWEST <= o <= HIGHEST), key=cost)
        step //= 2
    return best if cost(0) - cost(best) > MIN_GAIN * cost(0) else 0


def pack(offsets: list[int]) -> bytes:
    """One signed byte per channel; empty when every offset is zero."""
    return b"" if not any(offsets) else np.asarray(offsets, dtype=np.int8).tobytes()


def unpack(data: bytes, channels: int) -> list[int]:
    if not data:
        return [0] * channels
    if len(data) != channels:
        raise BitstreamError("file is corrupt (log-scale offsets do not match the channels)")
    return [int(v) for v in np.frombuffer(data, dtype=np.int8)]
