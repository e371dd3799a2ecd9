"""WebDataset tar shards of image files (``data.mode=shards``) and ``nlic pack-shards``.

A shard is a plain tar of the original image files (``<key>.png``, ``<key>.jpg``...; bytes copied,
nothing re-encoded), readable by the ``webdataset`` package and by ``tar``.  Reading a few large
files in sequence is what cluster file systems and object stores do well; each training loader
stream (one per rank and DataLoader worker) reads its own shards.
"""

from __future__ import annotations

import copy
import itertools
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from nlic.data.crops import draw_crop
from nlic.data.images import IMAGE_SUFFIXES, list_images, load_rgb, probe_image
from nlic.errors import NlicError

log = logging.getLogger(__name__)

#: file names of the shards ``nlic pack-shards`` writes
SHARD_PATTERN = "shard-%06d.tar"
SHARD_GLOB = "shard-*.tar"


def list_shards(root: str | Path) -> list[str]:
    """The shards of ``root``: every ``*.tar`` of a directory (sorted), or a brace pattern / URL that
    ``webdataset`` opens (``/data/shard-{000000..000099}.tar``, ``pipe:curl -s https://.../x.tar``)."""
    from braceexpand import braceexpand

    folder = Path(root)
    if folder.is_dir():
        shards = sorted(str(p) for p in folder.glob("*.tar"))
        if not shards:
            raise FileNotFoundError(f"no .tar shards in {folder} (make them with: nlic pack-shards FOLDER {folder})")
        return shards
    shards = list(braceexpand(str(root)))
    missing = [s for s in shards if ":" not in s.split("/")[0] and not Path(s).is_file()]
    if missing:
        raise FileNotFoundError(f"shard not found: {missing[0]}" + (f" (and {len(missing) - 1} more)" if missing[1:]
                                                                       else ""))
    return shards


def _warn_and_continue(exn: Exception) -> bool:
    log.warning("skipping unreadable shard data: %s", " ".join(str(exn).split()) or type(exn).__name__)
    return True


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def iter_shard_files(shards: Sequence[str],
                     select: Callable[[str], bool] | None = None) -> Iterator[tuple[str, str, bytes]]:
    """``(label, key, bytes)`` of every image member of ``shards`` in order (``label`` =
    ``shard:member`` names it in warnings).  ``select(key)`` skips members without keeping their
    data.  A shard that cannot be read is skipped from the damaged point with a warning naming it."""
    import webdataset as wds

    def keep(fname: str) -> bool:
        if not _is_image(fname):
            return False
        return select is None or select(fname.split(".", 1)[0])

    for sample in wds.tarfile_samples([{"url": s} for s in shards], handler=_warn_and_continue, select_files=keep):
        for ext, data in sample.items():
            if not ext.startswith("__") and isinstance(data, bytes) and _is_image(f"x.{ext}"):
                yield f"{sample['__url__']}:{sample['__key__']}.{ext}", sample["__key__"], data


def key_name(key: str) -> str:
    """The name a shard member answers to in ``data.val_files`` (its file stem, dots as ``_``)."""
    return key.rsplit("/", 1)[-1]


def read_shard_images(shards: Sequence[str], names: set[str] | None = None, count: int = 0,
                      min_size: int = 0) -> list[tuple[str, np.ndarray]]:
    """The images called ``names`` (all of them), or without names the first ``count`` readable ones,
    as ``(name, HxWx3 uint8)``.  Reads through the shards until it has them: for a large dataset
    give validation its own folder (``data.val_root``)."""
    out: list[tuple[str, np.ndarray]] = []
    want = set(names) if names else None
    select = (lambda key: key_name(key) in want) if want else None
    for label, key, data in iter_shard_files(shards, select):
        img = load_rgb(label, data)
        if img is None:
            continue
        if min(img.shape[:2]) < min_size:
            log.warning("skipping %s: smaller than %d px", label, min_size)
            continue
        out.append((key_name(key), img))
        if want is not None:
            want.discard(key_name(key))
            if not want:
                break
        elif len(out) >= count:
            break
    return out


class ShardCrops(IterableDataset):
    """Random crops streamed from tar shards, for one rank.

    Each loader stream (rank ``r``, DataLoader worker ``w``) reads its own shards (shard ``i`` goes
    to stream ``i mod (ranks * workers)``; with fewer shards than streams every stream reads all of
    them, starting at a different one) in an order reshuffled every pass, decodes them into a buffer
    of about ``cache_mb`` MB, and draws each crop from a random buffered image; an image is replaced
    by the next one after ``crops_per_image`` crops (never, once a stream's images all fit).  The
    generator is seeded with ``(seed, first epoch, r, w)``: reproducible, and different in every
    stream.  It lives on across epochs in a persistent worker, so an epoch continues where the last
    one stopped.  Unreadable or too small images are skipped with a warning naming the member.

    Configure it for a loader with :meth:`for_loader` (sets rank, world size, batch size, epoch).
    """

    def __init__(self, shards: Sequence[str], crop: int, epoch_size: int, seed: int = 0, gray_fraction: float = 0.0,
                 cache_mb: float = 256.0, crops_per_image: int = 8, exclude: Sequence[str] = ()) -> None:
        if crops_per_image < 1:
            raise ValueError(f"data.crops_per_image must be at least 1, got {crops_per_image}")
        self.shards = list(shards)
        self.crop, self.epoch_size, self.seed = crop, epoch_size, seed
        self.gray_fraction = gray_fraction
        self.cache_bytes = int(cache_mb * 1e6)
        self.crops_per_image = crops_per_image
        self.exclude = set(exclude)
        self.rank, self.world_size, self.batch_size, self.start_epoch = 0, 1, 1, 0
        self._stream: Iterator[torch.Tensor] | None = None

    def for_loader(self, rank: int, world_size: int, batch_size: int, epoch: int = 0) -> ShardCrops:
        """A fresh copy (no stream yet) for one DataLoader of rank ``rank`` of ``world_size``."""
        ds = copy.copy(self)
        ds.rank, ds.world_size, ds.batch_size, ds.start_epoch = rank, world_size, batch_size, epoch
        ds._stream = None
        return ds

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_stream"] = None
        return state

    def batches_per_rank(self) -> int:
        return self.epoch_size // (self.world_size * self.batch_size)

    def __len__(self) -> int:
        return self.batches_per_rank() * self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        batches = self.batches_per_rank()
        quota = (batches // workers + (worker < batches % workers)) * self.batch_size
        if self._stream is None:
            self._stream = self._crops(worker, workers)
        return itertools.islice(self._stream, quota)

    def stream_shards(self, worker: int, workers: int) -> list[str]:
        """The shards loader stream (this rank, ``worker`` of ``workers``) reads."""
        streams, stream = self.world_size * workers, self.rank * workers + worker
        if len(self.shards) >= streams:
            return self.shards[stream::streams]
        start = stream % len(self.shards)
        return self.shards[start:] + self.shards[:start]

    def _images(self, shards: list[str], rng: np.random.Generator) -> Iterator[np.ndarray | None]:
        """Decoded training images of ``shards``, pass after pass; ``None`` marks the end of a pass."""
        bad: set[str] = set()
        while True:
            found = 0
            for i in rng.permutation(len(shards)):
                for label, _key, data in iter_shard_files([shards[i]], lambda k: key_name(k) not in self.exclude):
                    if label in bad:
                        continue
                    img = load_rgb(label, data)
                    if img is not None and min(img.shape[:2]) < self.crop:
                        log.warning("skipping %s: smaller than %d px", label, self.crop)
                        img = None
                    if img is None:
                        bad.add(label)
                        continue
                    found += 1
                    yield img
            if not found:
                raise RuntimeError(f"no readable training images in shards {', '.join(shards)}")
            yield None

    def _crops(self, worker: int, workers: int) -> Iterator[torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.start_epoch, self.rank, worker))
        images = self._images(self.stream_shards(worker, workers), rng)
        buf: list[np.ndarray] = []
        size, resident = 0, False
        for img in images:  # fill the buffer: up to cache_mb, or all of this stream's images
            if img is None:
                resident = True
                break
            buf.append(img)
            size += img.nbytes
            if size >= self.cache_bytes:
                break
        uses = [0] * len(buf)
        while True:
            j = int(rng.integers(len(buf)))
            yield draw_crop(buf[j], rng, self.crop, self.gray_fraction)
            uses[j] += 1
            if not resident and uses[j] >= self.crops_per_image:
                img = next(images)
                buf[j] = img if img is not None else next(images)
                uses[j] = 0


def shard_key(rel: Path) -> str:
    """Tar member key of a file (path relative to the packed folder, no suffix): WebDataset splits a
    member name at its first dot, so dots in the name become ``_``."""
    parent, stem = rel.parent.as_posix(), rel.with_suffix("").name.replace(".", "_")
    return stem if parent == "." else f"{parent}/{stem}"


def pack_folder(folder: str | Path, out_dir: str | Path, shard_size_mb: float = 256.0,
                force: bool = False) -> dict:
    """Pack every image of ``folder`` (recursively) into ``out_dir/shard-NNNNNN.tar`` of about
    ``shard_size_mb`` MB each; unreadable files are skipped with a warning naming them.  Existing
    shards in ``out_dir`` are only replaced with ``force``; the new ones are written next to them
    first and moved in at the end, so a failed run leaves ``out_dir`` as it was."""
    import webdataset as wds

    if not shard_size_mb > 0:
        raise NlicError(f"--shard-size-mb must be positive, got {shard_size_mb}")
    folder, out = Path(folder), Path(out_dir)
    try:
        files = list_images(folder)
    except FileNotFoundError as err:
        raise NlicError(str(err)) from None
    if out.exists() and not out.is_dir():
        raise NlicError(f"output is not a directory: {out}")
    existing = sorted(out.glob(SHARD_GLOB)) if out.is_dir() else []
    if existing and not force:
        raise NlicError(f"{out} already holds {len(existing)} shards ({existing[0].name}...); "
                        "use --force to replace them")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".pack-shards-", dir=out))
    keys: set[str] = set()
    packed, skipped, total, done = 0, [], 0, False
    try:
        with wds.ShardWriter(str(tmp / SHARD_PATTERN), maxsize=shard_size_mb * 1e6, maxcount=1 << 62,
                             verbose=0) as writer:
            for path in files:
                if not probe_image(path):
                    skipped.append(path)
                    continue
                base = key = shard_key(path.relative_to(folder))
                n = 1
                while key in keys:  # x.png and x.jpg: distinct keys
                    key, n = f"{base}_{n}", n + 1
                keys.add(key)
                data = path.read_bytes()
                writer.write({"__key__": key, path.suffix.lower().lstrip("."): data})
                packed += 1
                total += len(data)
        if not packed:
            raise NlicError(f"no readable images in {folder}")
        written = sorted(tmp.glob(SHARD_GLOB))
        for old in existing:
            old.unlink()
        for f in written:
            f.replace(out / f.name)
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not done:
            shutil.rmtree(out, ignore_errors=True)
    return {"images": packed, "skipped": [str(p) for p in skipped], "shards": len(written), "bytes": total,
            "out_dir": str(out)}
