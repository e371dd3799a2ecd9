"""Training data at scale: lazy == memory crops, distinct crops per rank and worker, tar shards,
bad files skipped in every mode, whole-image validation (real photos written to tmp folders)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torch.utils.data import DistributedSampler

from nlic.data.datamodule import ImageDataModule, to_gray
from nlic.data.images import load_rgb
from nlic.data.shards import iter_shard_files, key_name, pack_folder

PHOTOS = {
    "astronaut": lambda: skdata.astronaut()[:200, :260],
    "chelsea": lambda: skdata.chelsea()[:180, :240],
    "coffee": lambda: skdata.coffee()[100:300, 150:450],
    "rocket": lambda: skdata.rocket()[:190, :250],
    "camera": lambda: np.repeat(skdata.camera()[:160, :200, None], 3, axis=2),
}


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five real photos (odd sizes, one grey) as PNG files, one in a sub-folder."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for i, (name, make) in enumerate(PHOTOS.items()):
        Image.fromarray(np.ascontiguousarray(make())).save(root / ("sub" if i == 4 else ".") / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def shard_dir(photo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "shards"
    pack_folder(photo_dir, out, shard_size_mb=0.05)  # about one photo per shard: 5 shards
    return out


def _module(root: Path, mode: str, **kw) -> ImageDataModule:
    args = {"crop": 64, "batch_size": 4, "epoch_size": 32, "seed": 7, "val_crop": None, "cache_mb": 1.0} | kw
    dm = ImageDataModule(str(root), mode=mode, **args)
    dm.setup("fit")
    return dm


def _crops(loader) -> list[bytes]:
    return [crop.numpy().tobytes() for batch in loader for crop in batch]


# ------------------------------------------------------------------------------ lazy == memory
def test_lazy_crops_equal_memory_crops(photo_dir):
    memory = _module(photo_dir, "memory", gray_fraction=0.3)
    # a 0.3 MB cache holds about two photos: decoding, cache hits and evictions all happen
    lazy = _module(photo_dir, "lazy", gray_fraction=0.3, cache_mb=0.3)
    for epoch in (0, 1):
        a = list(memory.train_loader(epoch=epoch))
        b = list(lazy.train_loader(epoch=epoch))
        assert len(a) == len(b) == 8
        assert all(torch.equal(x, y) for x, y in zip(a, b)), f"epoch {epoch}"
    assert _crops(memory.train_loader(epoch=0)) != _crops(memory.train_loader(epoch=1))  # new crops each epoch
    assert lazy.train_set.source._cached <= 0.3e6
    grey = [c for c in torch.cat(a) if torch.equal(c[0], c[1]) and torch.equal(c[1], c[2])]
    assert grey  # gray_fraction and the grey photo both give R = G = B crops
    other = _module(photo_dir, "memory", gray_fraction=0.3, seed=8)
    assert _crops(other.train_loader()) != _crops(memory.train_loader())


# ------------------------------------------------------------------------------ ranks and workers
def _streams_map(dm: ImageDataModule, world: int, workers: int) -> tuple[dict, dict]:
    """Crops of every (rank, worker) stream (real DataLoader workers: batch ``k`` comes from worker
    ``k % workers``) and every rank's crops in loader order."""
    dm.num_workers = workers
    streams: dict[tuple[int, int], list[bytes]] = {}
    ranks: dict[int, list[bytes]] = {}
    for rank in range(world):
        loader = dm.train_loader(rank=rank, world_size=world)
        assert isinstance(loader.sampler, DistributedSampler)  # Lightning keeps it under DDP
        for k, batch in enumerate(loader):
            crops = [c.numpy().tobytes() for c in batch]
            streams.setdefault((rank, k % max(1, workers)), []).extend(crops)
            ranks.setdefault(rank, []).extend(crops)
    return streams, ranks


def _streams_shards(dm: ImageDataModule, world: int, workers: int, monkeypatch) -> dict:
    """Crops of every (rank, worker) stream of the shard dataset, each worker run in this process."""
    import nlic.data.shards as shards

    out = {}
    for rank in range(world):
        for w in range(workers):
            monkeypatch.setattr(shards, "get_worker_info", lambda w=w: SimpleNamespace(id=w, num_workers=workers))
            ds = dm.train_set.for_loader(rank, world, dm.batch_size // world)
            out[(rank, w)] = [c.numpy().tobytes() for c in ds]
    return out


def _assert_distinct(streams: dict, per_stream: int) -> None:
    assert len(streams) == 4 and all(len(s) == per_stream for s in streams.values())
    keys = list(streams)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert streams[a] != streams[b], (a, b)
    every = [c for s in streams.values() for c in s]
    assert len(set(every)) == len(every), "a crop was drawn by two streams"


@pytest.mark.parametrize("mode", ["memory", "lazy"])
def test_two_ranks_two_workers_never_draw_the_same_crops(photo_dir, mode):
    dm = _module(photo_dir, mode, batch_size=4, epoch_size=32)
    streams, ranks = _streams_map(dm, world=2, workers=2)
    _assert_distinct(streams, per_stream=8)  # 32 crops / 2 ranks / 2 workers
    assert _streams_map(dm, world=2, workers=0)[1] == ranks  # from the seed alone, whatever the workers
    # the union of the ranks' crops does not depend on the world size
    assert sorted(_streams_map(dm, world=1, workers=0)[1][0]) == sorted(ranks[0] + ranks[1])


def test_two_ranks_two_workers_shards(shard_dir, monkeypatch):
    dm = _module(shard_dir, "shards", batch_size=4, epoch_size=32, cache_mb=0.3, crops_per_image=2)
    assert len(dm.train_set.shards) >= 4  # every stream reads its own shards
    assert dm.train_set.for_loader(0, 2, 2).stream_shards(0, 2) == dm.train_set.shards[0::4]
    streams = _streams_shards(dm, world=2, workers=2, monkeypatch=monkeypatch)
    _assert_distinct(streams, per_stream=8)
    monkeypatch.undo()
    dm.num_workers = 2  # real worker processes draw exactly these streams (batch k from worker k % 2)
    real: dict[tuple[int, int], list[bytes]] = {}
    for rank in range(2):
        for k, batch in enumerate(dm.train_loader(rank=rank, world_size=2)):
            real.setdefault((rank, k % 2), []).extend(c.numpy().tobytes() for c in batch)
    assert real == streams
    assert _streams_shards(dm, world=2, workers=2, monkeypatch=monkeypatch) == streams  # same seed: same crops
    dm.seed = dm.train_set.seed = 8
    assert _streams_shards(dm, world=2, workers=2, monkeypatch=monkeypatch) != streams


def test_shards_real_workers_fill_the_epoch(shard_dir):
    """Two real DataLoader workers: exactly epoch_size / world crops per rank, no crop twice."""
    dm = _module(shard_dir, "shards", batch_size=4, epoch_size=40, num_workers=2, cache_mb=0.3)
    loader = dm.train_loader(rank=1, world_size=2)
    crops = _crops(loader)
    assert len(loader) == 10 and len(crops) == 20 and len(set(crops)) == 20  # 2 per rank and batch
    assert _crops(loader) != crops  # persistent workers: the second epoch continues the streams


# ------------------------------------------------------------------------------ shards
def test_pack_shards_round_trip(photo_dir, tmp_path):
    from nlic.cli.main import main

    out = tmp_path / "shards"
    assert main(["pack-shards", str(photo_dir), str(out), "--shard-size-mb", "0.2"]) == 0
    shards = sorted(str(p) for p in out.glob("shard-*.tar"))
    assert len(shards) >= 2
    read = {key: load_rgb(label, data) for label, key, data in iter_shard_files(shards)}
    assert set(read) == {"astronaut", "chelsea", "coffee", "rocket", "sub/camera"}
    for key, img in read.items():
        np.testing.assert_array_equal(img, load_rgb(photo_dir / f"{key}.png"))
    # never overwrite without --force; --force replaces every old shard
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["pack-shards", str(photo_dir), str(out)]) == 2
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert main(["pack-shards", str(photo_dir), str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["shard-000000.tar"]
    assert main(["pack-shards", str(tmp_path / "missing"), str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_shards_validation_and_held_out_files(shard_dir):
    dm = _module(shard_dir, "shards", val_files=["coffee", "camera"], cache_mb=100)
    assert sorted(v.shape[1:] for v in dm.val_set) == [(160, 200), (200, 300)]
    crops = _crops(dm.train_loader())
    held = {key_name(k) for _, k, _ in iter_shard_files(dm.train_set.shards)} - dm.train_set.exclude
    assert held == {"astronaut", "chelsea", "rocket"} and len(crops) == 32
    with pytest.raises(FileNotFoundError, match="nosuch"):
        _module(shard_dir, "shards", val_files=["coffee", "nosuch"])


def test_grey_training_validates_on_grey_photos(photo_dir):
    """gray_fraction=1 with val_gray: every crop and every validation photo has R = G = B, and the
    validation photos are the grey versions of the colour ones."""
    colour = _module(photo_dir, "memory", val_files=["coffee", "chelsea"])
    grey = _module(photo_dir, "memory", val_files=["coffee", "chelsea"], gray_fraction=1.0, val_gray=True)
    for c, g in zip(colour.val_set, grey.val_set):
        assert (g[0] == g[1]).all() and (g[1] == g[2]).all()
        assert np.array_equal(g[0].numpy(), to_gray(c.permute(1, 2, 0).numpy()))
    for crop in _crops(grey.train_loader()):
        rgb = np.frombuffer(crop, dtype=np.uint8).reshape(3, 64, 64)
        assert (rgb[0] == rgb[1]).all() and (rgb[1] == rgb[2]).all()


# ------------------------------------------------------------------------------ bad files
@pytest.fixture
def bad_dir(photo_dir: Path, tmp_path: Path) -> Path:
    """Two good photos, a text file named .png and a truncated PNG (its header still opens)."""
    root = tmp_path / "bad"
    root.mkdir()
    for name in ("astronaut", "chelsea"):
        (root / f"{name}.png").write_bytes((photo_dir / f"{name}.png").read_bytes())
    (root / "notes.png").write_bytes(b"just some text\n")
    png = (photo_dir / "coffee.png").read_bytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    return root


@pytest.mark.parametrize("mode", ["memory", "lazy", "shards"])
def test_bad_files_skipped_with_a_warning(bad_dir, tmp_path, caplog, mode):
    root = bad_dir
    with caplog.at_level(logging.WARNING, logger="nlic.data"):
        if mode == "shards":
            root = tmp_path / "shards"
            pack_folder(bad_dir, root, shard_size_mb=1.0)  # notes.png skipped here, truncated.png packed
        dm = _module(root, mode, epoch_size=64, batch_size=8)
        crops = _crops(dm.train_loader())  # lazy and shards meet truncated.png when they decode it
    assert len(crops) == 64
    messages = " | ".join(rec.getMessage() for rec in caplog.records)
    for name in ("notes.png", "truncated.png"):
        assert name in messages, (name, messages)
    assert len(dm.val_set) == 2  # validation skips them too


# ------------------------------------------------------------------------------ validation
def test_whole_image_validation_finite_bits_exact_at_tau0(photo_dir, one_thread):
    import pytorch_lightning as pl

    from nlic.api import default_model_path
    from nlic.lightning.module import NearLosslessModule
    from nlic.model_io import load_model

    shipped = load_model(default_model_path())  # trained weights: tau 2 must cost less than tau 0
    module = NearLosslessModule(shipped.config, val_taus=[0, 2])
    module.codec.load_state_dict(shipped.codec.state_dict())
    dm = _module(photo_dir, "lazy", max_val_images=2)
    sizes = [tuple(v.shape[1:]) for v in dm.val_set]
    assert sizes == [(200, 260), (180, 240)]  # whole photos, not multiples of 64
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False)
    (metrics,) = trainer.validate(module, dataloaders=dm.val_dataloader(), verbose=False)
    assert np.isfinite(metrics["val/bpp"]) and metrics["val/bpp"] > 0
    assert metrics["val/max_err_tau0"] == 0
    assert metrics["val/max_err_tau2"] <= 2
    assert metrics["val/bpp_tau2"] < metrics["val/bpp_tau0"]
    assert metrics["val/bpp"] == metrics["val/bpp_tau0"]  # (the lowest tau's: the default selection metric)
    # the metric experiments that serve every tau select on (conf/experiment/default_model_anneal.yaml)
    assert metrics["val/bpp_mean_tau"] == pytest.approx((metrics["val/bpp_tau0"] + metrics["val/bpp_tau2"]) / 2)


def test_configs_compose():
    from tests._runs import compose

    cfg = compose(["experiment=default_model", "data.root=/x"])
    assert cfg.data.mode == "lazy" and cfg.data.val_crop is None and cfg.data.seed == cfg.seed
    cfg = compose(["data=shards", "data.root=/x"])
    assert cfg.data.mode == "shards" and cfg.data.val_crop is None
    assert compose([]).data.mode == "memory"


def test_gpu_stage_composes_warm_started_and_timed() -> None:
    """experiment=default_model_gpu (benchmarks/device_stage.sh): the shipped model's weights, the
    GPU trainer, a warm-up and a cosine over the time budget, no real-coding evaluation (its libraries may be
    missing there), colour crops of the coder's patch size, the held-out photos for validation."""
    from pathlib import Path

    from tests._runs import compose

    cfg = compose(["experiment=default_model_gpu", "data.root=/x", "data.val_root=/y"])
    assert Path(cfg.init_weights).is_file() and Path(cfg.init_weights).name == "default_model.pt"
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.max_time and cfg.trainer.max_steps == -1
    assert cfg.model.scheduler._target_.endswith("WallClockCosineDecay") and cfg.model.scheduler.warmup > 0
    assert not cfg.evaluate.enabled and not cfg.demo and cfg.model.train_heads == "all"
    assert cfg.data.crop == 64 and cfg.data.gray_fraction == 0 and cfg.data.val_files == list(cfg.val_photos)
    assert "csv" in cfg.logger and "wandb" not in cfg.logger
    # its grey-heads run: the shipped grey heads renamed into the plain ones, grey crops and validation
    grey = compose(["experiment=default_model_gray_gpu", "data.root=/x", "data.val_root=/y"])
    assert [str(e).split(":")[-1] for e in grey.init_weights] == [
        "residual.gray_head.->residual.head.", "residual.gray_tau_head.->residual.tau_head."]
    assert grey.data.gray_fraction == 1.0 and grey.data.val_gray and grey.trainer.accelerator == "gpu"
    # the wide run: every size of the residual head at least the shipped one's (it grows from it)
    wide = compose(["experiment=wide_model_gpu", "data.root=/x", "data.val_root=/y"])
    sizes = ("context_channels", "hidden", "layers", "channel_hidden")
    assert all(wide.residual[k] >= cfg.residual[k] for k in sizes) and any(wide.residual[k] > cfg.residual[k]
                                                                          for k in sizes)
    assert wide.init_weights == cfg.init_weights and wide.model.scheduler.warmup > 0
