"""Context masks and their parallel decoding schedules.

A mask keeps the taps of a 7x7 type-A (raster-causal) kernel whose offset (di, dj) satisfies
``slope*di + dj < 0``; then every pixel of one wavefront ``slope*i + j = t`` only sees pixels of
earlier wavefronts, and all pixels of a wavefront (in every 64x64 patch) decode in one step.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: wavefront slope per mask name; None = no spatial context (one step)
MASK_SLOPES: dict[str, int | None] = {
    "5p": 4,  # full type-A mask, 316 steps on 64x64
    "4p": 3,  # 253 steps
    "3p": 2,  # DLPR default, 190 steps
    "2p": 1,  # 127 steps
    "p": 0,  # 64 steps, left columns only
    "serial": 64,  # raster order, 4096 steps
    "none": None,  # conditioning on the lossy features only (RC-style)
}


def check_mask(name: str) -> str:
    key = name.lower()
    if key not in MASK_SLOPES:
        raise ValueError(f"unknown context mask {name!r}; choose one of {sorted(MASK_SLOPES)}")
    return key


def context_taps(name: str, kernel: int = 7) -> list[tuple[int, int]]:
    """Offsets (di, dj) of the causal taps of a mask, in raster order."""
    slope = MASK_SLOPES[check_mask(name)]
    if slope is None:
        return []
    h = kernel // 2
    taps = []
    for di in range(-h, 1):
        for dj in range(-h, h + 1):
            if di == 0 and dj >= 0:
                break
            if slope * di + dj < 0:
                taps.append((di, dj))
    return taps


def mask_tensor(name: str, kernel: int = 7) -> np.ndarray:
    """The mask as a ``kernel x kernel`` 0/1 array (centre at kernel//2)."""
    m = np.zeros((kernel, kernel), dtype=np.float32)
    h = kernel // 2
    for di, dj in context_taps(name, kernel):
        m[h + di, h + dj] = 1.0
    return m


@lru_cache(maxsize=32)
def schedule(name: str, patch: int = 64) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Wavefronts of a ``patch x patch`` block: a tuple of (rows, cols) index arrays per step."""
    slope = MASK_SLOPES[check_mask(name)]
    ii, jj = np.meshgrid(np.arange(patch), np.arange(patch), indexing="ij")
    if slope is None:
        return ((ii.ravel(), jj.ravel()),)
    t = slope * ii + jj
    steps = []
    for s in range(int(t.max()) + 1):
        sel = t == s
        if sel.any():
            steps.append((ii[sel], jj[sel]))
    return tuple(steps)
