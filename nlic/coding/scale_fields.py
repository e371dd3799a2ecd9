"""A tile's chosen offsets (:class:`ScaleChoice`) and the tile chunk's scales field that stores
them, formats 3 to 11: bytes out, and back with a clear error for a field that does not match its
tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nlic.coding import least_squares
from nlic.coding.scales import (
    CHANNEL_SOURCES,
    CHROMA_SOURCE,
    FORMAT6_SOURCES,
    FORMAT7_SOURCES,
    LS_SOURCES,
    MEAN_LEVELS,
    MEAN_SOURCES,
    OLD_LEVELS,
    OLD_MEAN_LEVELS,
    PHASES,
    SYMBOL_CLASSES,
)
from nlic.entropy.pmf import SHARPNESS_STEPS
from nlic.errors import BitstreamError

#: per-patch deltas (format 4): in steps of DELTA_STEP grid steps, a nibble each
DELTA_STEP, DELTA_MIN, DELTA_MAX = 2, -8, 7
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
    if offsets[..., :OLD_LEVELS.start].any() or offsets[..., OLD_LEVELS.stop :].any():
        raise ValueError("formats 6 to 8 have no offsets beyond their middle mean levels")
    return _pack_masked(offsets[..., OLD_LEVELS].reshape(-1, OLD_MEAN_LEVELS), OLD_MEAN_LEVELS)


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
        mean_offsets[:, :sources, OLD_LEVELS] = stored.reshape(channels, sources, OLD_MEAN_LEVELS)
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
