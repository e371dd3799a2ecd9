"""Random-crop training data and whole-image validation data as a LightningDataModule.

Three ways to hold the training images (``data.mode``):

* ``memory``: decode every image at setup (small sets: the built-in photos, a few hundred files);
* ``lazy``: list the files, decode one when a crop is drawn from it, keep the most recent in a cache
  of ``cache_mb`` MB per process: memory no longer grows with the dataset, crops are the same as
  in memory mode;
* ``shards``: stream WebDataset tar shards (``nlic pack-shards``), each rank and worker its own.

Memory and lazy crops depend only on ``(seed, crop id)`` and :class:`~nlic.data.crops.CropSampler`
gives every rank its own crop ids, so ranks and workers never draw the same crop.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from nlic.data.crops import CropSampler, LazyImages, RandomCrops, ValImages, to_gray
from nlic.data.images import list_images, load_folder, probe_image, read_images
from nlic.data.shards import ShardCrops, list_shards, read_shard_images

__all__ = ["MODES", "ImageDataModule", "RandomCrops", "ValImages", "to_gray"]

log = logging.getLogger(__name__)

MODES = ("memory", "lazy", "shards")


def _first_readable(paths: list[Path], count: int, min_size: int) -> list[tuple[str, np.ndarray]]:
    """The first ``count`` images of ``paths`` that decode (bad ones skipped with a warning)."""
    return read_images(paths, min_size, count)


class ImageDataModule(pl.LightningDataModule):
    """Images from ``root`` (``None``: the built-in images) for training and validation.

    ``batch_size`` and ``epoch_size`` are GLOBAL: under DDP each process loads ``batch_size /
    world_size`` crops per step and ``epoch_size / world_size`` per epoch.  Validation uses
    ``val_root`` or, without it, the ``val_files`` (file stems) held out of ``root`` or else the
    first images of ``root``; at most ``max_val_images``, whole (``val_crop=None``) or centre-cropped.
    ``cache_mb`` bounds the decoded images each process keeps (lazy: cache, shards: shuffle buffer);
    ``crops_per_image`` is how many crops a shard stream draws from an image before replacing it.
    ``val_gray`` validates on the grey versions of the validation images (for grey heads, trained
    with ``gray_fraction=1``).
    """

    def __init__(
        self, root: str | None = None, val_root: str | None = None, crop: int = 64, val_crop: int | None = 256,
        batch_size: int = 8, epoch_size: int = 256, num_workers: int = 0, max_val_images: int = 8,
        gray_fraction: float = 0.0, val_files: list[str] | None = None, mode: str = "memory",
        cache_mb: float = 256.0, crops_per_image: int = 8, seed: int = 0, val_gray: bool = False,
    ) -> None:
        super().__init__()
        self.root, self.val_root = root, val_root
        self.crop, self.val_crop = crop, val_crop
        self.batch_size, self.epoch_size = batch_size, epoch_size
        self.num_workers = num_workers
        self.max_val_images = max_val_images
        self.gray_fraction = gray_fraction
        self.val_gray = val_gray
        # names (file stems) in ``root`` held out of training and validated on (when no val_root)
        self.val_files = set(val_files or [])
        self.mode, self.cache_mb, self.crops_per_image, self.seed = mode, cache_mb, crops_per_image, seed
        if crop % 64:
            raise ValueError(f"data.crop must be a multiple of 64, got {crop}")
        if val_crop is not None and val_crop % 64:
            raise ValueError(f"data.val_crop must be a multiple of 64 or null (whole images), got {val_crop}")
        if mode not in MODES:
            raise ValueError(f"data.mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "shards" and root is None:
            raise ValueError("data.mode=shards needs data.root (a folder of shards from nlic pack-shards)")

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        val_min = 64 if self.val_crop else 1
        if self.mode == "memory":
            train, val = self._setup_memory(val_min)
        elif self.mode == "lazy":
            train, val = self._setup_lazy(val_min)
        else:
            train, val = self._setup_shards(val_min)
        self.train_set = train
        val_images = [a for _, a in val[: self.max_val_images]]
        if self.val_gray:
            val_images = [np.repeat(to_gray(a)[..., None], 3, axis=2) for a in val_images]
        self.val_set = ValImages(val_images, self.val_crop)

    def _check_val_files(self, names: set[str]) -> None:
        missing = self.val_files - names
        if missing:
            raise FileNotFoundError(f"data.val_files not found in {self.root}: {', '.join(sorted(missing))}")

    def _val_from_root(self, val_min: int) -> list[tuple[str, np.ndarray]] | None:
        if not self.val_root:
            return None
        return _first_readable(list_images(self.val_root), self.max_val_images, val_min)

    def _setup_memory(self, val_min: int) -> tuple[RandomCrops, list]:
        images = load_folder(self.root, min_size=self.crop)
        train = [a for name, a in images if name not in self.val_files]
        val = self._val_from_root(val_min)
        if val is None:
            if self.val_files:
                self._check_val_files({name for name, _ in images})
            val = [(n, a) for n, a in images if not self.val_files or n in self.val_files]
        return RandomCrops(train, self.crop, self.epoch_size, self.seed, self.gray_fraction), val

    def _setup_lazy(self, val_min: int) -> tuple[RandomCrops, list]:
        paths = list_images(self.root)
        if self.val_files and not self.val_root:
            self._check_val_files({p.stem for p in paths})
        # headers only: the same files as memory mode (so the same crops), without decoding them
        train = [p for p in paths if p.stem not in self.val_files and probe_image(p, self.crop)]
        if not train:
            raise FileNotFoundError(f"no readable training images in {self.root}")
        val = self._val_from_root(val_min)
        if val is None:
            held = [p for p in paths if not self.val_files or p.stem in self.val_files]
            val = _first_readable(held, self.max_val_images, val_min)
        source = LazyImages(train, self.cache_mb, self.crop)
        return RandomCrops(source, self.crop, self.epoch_size, self.seed, self.gray_fraction), val

    def _setup_shards(self, val_min: int) -> tuple[ShardCrops, list]:
        shards = list_shards(self.root)
        val = self._val_from_root(val_min)
        if val is None:
            if self.val_files:
                val = read_shard_images(shards, self.val_files, min_size=val_min)
                self._check_val_files({name for name, _ in val})
            else:
                val = read_shard_images(shards, count=self.max_val_images, min_size=val_min)
        train = ShardCrops(shards, self.crop, self.epoch_size, self.seed, self.gray_fraction, self.cache_mb,
                           self.crops_per_image, exclude=sorted(self.val_files))
        return train, val

    # ------------------------------------------------------------------ loaders
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _per_device_batch(self, world: int) -> int:
        if self.batch_size % world:
            raise ValueError(f"global batch {self.batch_size} is not divisible by {world} processes")
        return self.batch_size // world

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        return self.train_loader(rank, world, epoch)

    def train_loader(self, rank: int = 0, world_size: int = 1, epoch: int = 0) -> DataLoader:
        """The training DataLoader of rank ``rank`` of ``world_size`` (starting at ``epoch``)."""
        batch = self._per_device_batch(world_size)
        common = {"batch_size": batch, "drop_last": True, "num_workers": self.num_workers,
                  "persistent_workers": self.num_workers > 0}
        if isinstance(self.train_set, ShardCrops):
            workers = world_size * max(1, self.num_workers)
            if len(self.train_set.shards) < workers:
                log.warning("%d shards for %d loader streams (ranks x workers): streams share shards (different "
                            "crops of the same images); pack smaller shards for more", len(self.train_set.shards),
                            workers)
            return DataLoader(self.train_set.for_loader(rank, world_size, batch, epoch), **common)
        sampler = CropSampler(self.train_set, num_replicas=world_size, rank=rank)
        sampler.set_epoch(epoch)
        return DataLoader(self.train_set, sampler=sampler, **common)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=1, num_workers=0)
