"""Random training crops that depend only on (seed, crop id), so every mode, rank and worker draws
reproducible crops; images come from memory or are decoded on demand (``data.mode=memory|lazy``)."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from nlic.data.images import load_rgb

log = logging.getLogger(__name__)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an 8-bit RGB array, as Pillow's ``convert("L")`` computes it."""
    r, g, b = (rgb[..., c].astype(np.int32) for c in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def draw_crop(img: np.ndarray, rng: np.random.Generator, crop: int, gray_fraction: float) -> torch.Tensor:
    """One random ``crop`` x ``crop`` patch of ``img`` with random flips (and, with probability
    ``gray_fraction``, turned grey), as a ``3 x crop x crop`` uint8 tensor.  Shared by every mode so
    that the same generator state gives the same crop whatever holds the image."""
    h, w = img.shape[:2]
    y = rng.integers(0, h - crop + 1)
    x = rng.integers(0, w - crop + 1)
    patch = img[y : y + crop, x : x + crop]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    if rng.random() < 0.5:
        patch = patch[::-1]
    if rng.random() < gray_fraction:  # grey crops (R = G = B) teach the grey path
        patch = np.repeat(to_gray(patch)[..., None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)


class ImageSource(Protocol):
    """Indexed training images; ``get`` returns ``None`` for an image that turned out unreadable."""

    def __len__(self) -> int: ...

    def get(self, index: int) -> np.ndarray | None: ...


class MemoryImages:
    """Images decoded up front (``data.mode=memory``): fastest, memory grows with the dataset."""

    def __init__(self, images: Sequence[np.ndarray]) -> None:
        self.images = list(images)

    def __len__(self) -> int:
        return len(self.images)

    def get(self, index: int) -> np.ndarray:
        return self.images[index]


class LazyImages:
    """Image files decoded when a crop is drawn from them (``data.mode=lazy``), the most recently
    used kept in a cache of at most ``cache_mb`` MB per process (one per DataLoader worker), so
    memory is bounded whatever the dataset's size.  A file that fails to decode is skipped with a
    warning naming it (once per process) and never tried again."""

    def __init__(self, paths: Sequence[Path], cache_mb: float = 0.0, min_size: int = 0) -> None:
        self.paths = [Path(p) for p in paths]
        self.cache_bytes = int(cache_mb * 1e6)
        self.min_size = min_size
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached = 0
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict:  # a worker starts with an empty cache, not a copy of ours
        state = self.__dict__.copy()
        state["_cache"], state["_cached"] = OrderedDict(), 0
        return state

    def get(self, index: int) -> np.ndarray | None:
        img = self._cache.get(index)
        if img is not None:
            self._cache.move_to_end(index)
            return img
        if index in self._bad:
            return None
        img = load_rgb(self.paths[index])
        if img is not None and min(img.shape[:2]) < self.min_size:
            log.warning("skipping %s: smaller than %d px", self.paths[index], self.min_size)
            img = None
        if img is None:
            self._bad.add(index)
            if len(self._bad) == len(self.paths):
                raise RuntimeError(f"no readable training images among {len(self.paths)} files")
            return None
        if img.nbytes <= self.cache_bytes:
            self._cache[index] = img
            self._cached += img.nbytes
            while self._cached > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= old.nbytes
        return img


class RandomCrops(Dataset):
    """Random crops (with flips) of an :class:`ImageSource`; crop ``i`` is drawn by a generator
    seeded with ``(seed, i)``, so it is the same in memory and lazy mode and in any process.

    The index is a *crop id*, not bounded by ``len``: :class:`CropSampler` hands out the ids of
    epoch ``e`` as ``e * epoch_size + k``, giving new crops every epoch.
    """

    def __init__(self, source: ImageSource | Sequence[np.ndarray], crop: int, epoch_size: int, seed: int = 0,
                 gray_fraction: float = 0.0) -> None:
        self.source = source if hasattr(source, "get") else MemoryImages(source)
        self.crop = crop
        self.epoch_size = epoch_size
        self.seed = seed
        self.gray_fraction = gray_fraction

    def __len__(self) -> int:
        return self.epoch_size

    def __getitem__(self, idx: int) -> torch.Tensor:
        rng = np.random.default_rng((self.seed, int(idx)))
        n = len(self.source)
        while True:  # an unreadable file (lazy mode) is skipped: draw another image
            img = self.source.get(int(rng.integers(n)))
            if img is not None:
                return draw_crop(img, rng, self.crop, self.gray_fraction)


class CropSampler(DistributedSampler):
    """Crop ids for one rank: epoch ``e`` holds ids ``e*epoch_size .. (e+1)*epoch_size - 1`` and rank
    ``r`` of ``R`` takes ``e*epoch_size + r + R*k``.  Ranks (and the DataLoader workers of a rank,
    which get different batches) therefore never draw the same crop, the union over ranks is the
    same whatever the world size, and everything follows from the seed.  A ``DistributedSampler``
    so that Lightning keeps it under DDP (and calls :meth:`set_epoch`) instead of replacing it.
    """

    def __init__(self, dataset: RandomCrops, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=True)
        self.epoch_size = dataset.epoch_size
        self.num_samples = self.epoch_size // num_replicas
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.epoch_size + self.rank
        return iter(range(start, start + self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class ValImages(Dataset):
    """Validation images: whole (``crop=None``; the model pads them) or a centre crop of at most
    ``crop`` pixels rounded down to a multiple of 64 (faster, but not what real coding sees)."""

    def __init__(self, images: Sequence[np.ndarray], crop: int | None = None) -> None:
        self.items = []
        for img in images:
            if crop:
                h, w = img.shape[:2]
                ch, cw = min(crop, h // 64 * 64), min(crop, w // 64 * 64)
                y, x = (h - ch) // 2, (w - cw) // 2
                img = img[y : y + ch, x : x + cw]
            self.items.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> torch.Tensor:
        return self.items[idx]
