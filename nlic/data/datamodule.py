"""Random-crop training data and fixed-crop validation data as a LightningDataModule."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from nlic.data.images import load_folder


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an 8-bit RGB array, as Pillow's ``convert("L")`` computes it."""
    r, g, b = (rgb[..., c].astype(np.int32) for c in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


class RandomCrops(Dataset):
    """``epoch_size`` random crops (with flips) drawn from in-memory images."""

    def __init__(self, images: list[np.ndarray], crop: int, epoch_size: int, seed: int = 0,
                 gray_fraction: float = 0.0) -> None:
        self.images = images
        self.crop = crop
        self.epoch_size = epoch_size
        self.seed = seed
        self.gray_fraction = gray_fraction

    def __len__(self) -> int:
        return self.epoch_size

    def __getitem__(self, idx: int) -> torch.Tensor:
        rng = np.random.default_rng((self.seed, idx, torch.randint(0, 2**31, (1,)).item()))
        img = self.images[rng.integers(len(self.images))]
        h, w = img.shape[:2]
        y = rng.integers(0, h - self.crop + 1)
        x = rng.integers(0, w - self.crop + 1)
        patch = img[y : y + self.crop, x : x + self.crop]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.5:
            patch = patch[::-1]
        if rng.random() < self.gray_fraction:  # grey crops (R = G = B) teach the grey path
            patch = np.repeat(to_gray(patch)[..., None], 3, axis=2)
        return torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)


class CenterCrops(Dataset):
    """One centre crop (a multiple of 64) per image, for fast deterministic validation."""

    def __init__(self, images: list[np.ndarray], crop: int) -> None:
        self.items = []
        for img in images:
            h, w = img.shape[:2]
            ch, cw = min(crop, h // 64 * 64), min(crop, w // 64 * 64)
            y, x = (h - ch) // 2, (w - cw) // 2
            self.items.append(torch.from_numpy(np.ascontiguousarray(img[y : y + ch, x : x + cw])).permute(2, 0, 1))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> torch.Tensor:
        return self.items[idx]


class ImageDataModule(pl.LightningDataModule):
    """Images from ``root`` (``None``: the built-in images) for training and validation.

    ``batch_size`` is the GLOBAL batch: under DDP each process loads ``batch_size / world_size``.
    """

    def __init__(
        self, root: str | None = None, val_root: str | None = None, crop: int = 64, val_crop: int = 256,
        batch_size: int = 8, epoch_size: int = 256, num_workers: int = 0, max_val_images: int = 8,
        gray_fraction: float = 0.0, val_files: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.root, self.val_root = root, val_root
        self.crop, self.val_crop = crop, val_crop
        self.batch_size, self.epoch_size = batch_size, epoch_size
        self.num_workers = num_workers
        self.max_val_images = max_val_images
        self.gray_fraction = gray_fraction
        # names (file stems) in ``root`` held out of training and validated on (when no val_root)
        self.val_files = set(val_files or [])
        if crop % 64:
            raise ValueError(f"data.crop must be a multiple of 64, got {crop}")

    def setup(self, stage: str | None = None) -> None:
        images = load_folder(self.root, min_size=self.crop)
        train = [a for name, a in images if name not in self.val_files]
        if self.val_root:
            val = [a for _, a in load_folder(self.val_root, min_size=64)]
        elif self.val_files:
            missing = self.val_files - {name for name, _ in images}
            if missing:
                raise FileNotFoundError(f"data.val_files not found in {self.root}: {', '.join(sorted(missing))}")
            val = [a for name, a in images if name in self.val_files]
        else:
            val = [a for _, a in images]
        self.train_set = RandomCrops(train, self.crop, self.epoch_size, gray_fraction=self.gray_fraction)
        self.val_set = CenterCrops(val[: self.max_val_images], self.val_crop)

    def _per_device_batch(self) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world:
            raise ValueError(f"global batch {self.batch_size} is not divisible by {world} processes")
        return self.batch_size // world

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set, batch_size=self._per_device_batch(), shuffle=True, drop_last=True,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=1, num_workers=0)
