"""Per-tile log-scale offsets: one integer per channel added to every component's log-scale index.

The network is sharper or blunter than a photo unlike its training crops deserves (on the held-out
photos the best single offset per tile ranged from -0.2 to +0.1 in natural-log units and saved
about 2 % of the bits at tau = 0).  The encoder estimates, on a fixed sample of the tile's symbols,
the code length under each candidate offset (float arithmetic on the integer mixtures: only the
encoder computes it, the file stores the choice), keeps the best, and stores it as one signed byte
per channel; both sides add it to the integer log-scale indices before the tables (exact).
"""

from __future__ import annotations

import numpy as np

from nlic.errors import BitstreamError
from nlic.residual.integer import LOG_SCALE_LEVELS, LOG_SCALE_MIN, LOG_SCALE_STEPS, LOGIT_STEPS, MEAN_STEPS

#: offsets searched, in log-scale grid steps (1/16 natural-log unit): -2 .. +1, first every
#: COARSE steps, then halving the step around the best (the estimate is smooth in the offset)
LOWEST, HIGHEST, COARSE = -32, 16, 4
#: symbols per channel the choice is estimated on (a fixed, evenly spaced sample)
SAMPLES = 8192
#: an offset is kept only when it saves at least this share of the channel's estimated bits
MIN_GAIN = 0.002


def apply(log_scales: np.ndarray, offset: int) -> np.ndarray:
    """Integer log-scale indices moved by ``offset`` steps, kept on the grid."""
    if offset == 0:
        return log_scales
    return np.clip(log_scales + offset, 0, LOG_SCALE_LEVELS - 1)


def _bits(logits: np.ndarray, means: np.ndarray, log_scales: np.ndarray, symbols: np.ndarray, lo: np.ndarray,
          hi: np.ndarray, tau: int) -> float:
    """Estimated bits of ``symbols`` (bins) under integer mixtures ``[n, K]`` (float64)."""
    width = 2 * tau + 1
    gap = (logits - logits.max(-1, keepdims=True)) / LOGIT_STEPS
    weights = np.exp(gap)
    weights /= weights.sum(-1, keepdims=True)
    mu = means / MEAN_STEPS
    inv_s = np.exp(-(LOG_SCALE_MIN + log_scales / LOG_SCALE_STEPS))
    centre = (symbols * width)[:, None]
    upper = np.where((symbols >= hi)[:, None], np.inf, (centre + tau + 0.5 - mu) * inv_s)
    lower = np.where((symbols <= lo)[:, None], -np.inf, (centre - tau - 0.5 - mu) * inv_s)
    sig = lambda v: 0.5 * (1.0 + np.tanh(0.5 * v))  # noqa: E731 - the logistic, no overflow
    p = (weights * (sig(upper) - sig(lower))).sum(-1)
    return float(-np.log2(np.maximum(p, 2.0**-30)).sum())


def choose(fields: list[tuple[np.ndarray, np.ndarray, np.ndarray]], symbols: list[np.ndarray],
           lo: list[np.ndarray], hi: list[np.ndarray], tau: int) -> list[int]:
    """The offset of each channel from a sample of its symbols: ``fields[c]`` their mixtures
    (logits, means, log-scales ``[n, K]``), ``symbols``/``lo``/``hi`` ``[n]`` their bins and feasible
    bins."""
    return [_best_offset(*f, sym, low, high, tau) for f, sym, low, high in zip(fields, symbols, lo, hi)]


def _best_offset(logits: np.ndarray, means: np.ndarray, log_scales: np.ndarray, symbols: np.ndarray,
                 lo: np.ndarray, hi: np.ndarray, tau: int) -> int:
    costs: dict[int, float] = {}

    def cost(o: int) -> float:
        if o not in costs:
            costs[o] = _bits(logits, means, apply(log_scales, o), symbols, lo, hi, tau)
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
