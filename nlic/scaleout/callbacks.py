"""Diagnostics for data-parallel training."""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


class ReplicaCheck(pl.Callback):
    """At the end of ``fit``, check that every DDP rank holds exactly the same weights.

    Data parallelism is only correct if every optimizer step sees all-reduced gradients; a backward
    pass DDP does not synchronise (e.g. a second ``manual_backward`` on parameters the first one did not
    touch, without ``find_unused_parameters``) silently lets the replicas drift apart.  Compares
    per-tensor float64 checksums of all parameters across ranks and raises on any difference.
    Cheap (one all-gather of a vector); a no-op in single-process runs.

    Args:
        strict: raise ``RuntimeError`` on a mismatch (else only log an error).
    """

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self.checked = False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size < 2:
            return
        names, sums = [], []
        for name, p in pl_module.named_parameters():
            names.append(name)
            weights = torch.arange(1, p.numel() + 1, dtype=torch.float64, device=p.device)
            sums.append((p.detach().double().flatten() * weights).sum())
        local = torch.stack(sums)
        gathered = trainer.strategy.all_gather(local)  # [world, n_params]
        diff = (gathered - gathered[0:1]).abs().amax(dim=0)
        bad = [names[i] for i in torch.nonzero(diff > 0).flatten().tolist()]
        self.checked = True
        if not bad:
            log.info("ReplicaCheck: %d parameter tensors identical on %d ranks", len(names), trainer.world_size)
            return
        msg = f"ReplicaCheck: DDP replicas differ in {len(bad)} parameter tensors, e.g. {bad[:5]}"
        if self.strict:
            raise RuntimeError(msg)
        log.error(msg)


class StepTimer(pl.Callback):
    """Wall time per training batch (all optimizer steps of one batch) and images per second.

    Skips the first ``warmup`` batches (allocator warm-up, ``torch.compile``), then on rank 0 writes
    ``<output_dir>/throughput.json`` at the end of ``fit``: batches timed, median and mean seconds per
    batch, global batch size and images/s (global batch / median time).  Used by
    ``benchmarks/train_throughput.py``.

    Args:
        output_dir: where ``throughput.json`` goes (``None``: only logged).
        warmup: batches not timed.
    """

    def __init__(self, output_dir: str | None = None, warmup: int = 3) -> None:
        self.output_dir = output_dir
        self.warmup = warmup
        self.times: list[float] = []
        self._start: float | None = None
        self._batch = 0

    def _sync(self, trainer: pl.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(trainer)
        self._start = time.perf_counter()
        self._batch = int(batch.shape[0]) if torch.is_tensor(batch) else 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(trainer)
        if self._start is not None and batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._start)

    def summary(self, trainer: pl.Trainer) -> dict:
        global_batch = self._batch * trainer.world_size
        if not self.times:
            return {"batches": 0, "global_batch": global_batch}
        median = statistics.median(self.times)
        return {
            "batches": len(self.times), "s_per_step_median": median, "s_per_step_mean": statistics.fmean(self.times),
            "global_batch": global_batch, "world_size": trainer.world_size, "images_per_s": global_batch / median,
            "precision": str(trainer.precision), "device": trainer.strategy.root_device.type,
        }

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        result = self.summary(trainer)
        log.info("StepTimer: %s", result)
        if self.output_dir is not None:
            Path(self.output_dir).mkdir(parents=True, exist_ok=True)
            (Path(self.output_dir) / "throughput.json").write_text(json.dumps(result, indent=2))
