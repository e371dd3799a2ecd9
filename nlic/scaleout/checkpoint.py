"""Preemption-safe checkpoints: atomic writes and ``ckpt_path=last`` resolution."""

from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.plugins.io import TorchCheckpointIO

log = logging.getLogger(__name__)

_HPC = re.compile(r"hpc_ckpt_(\d+)\.ckpt$")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write a checkpoint to ``<path>.tmp`` and rename it over ``<path>``.

    A job killed while saving (SIGKILL at the end of a SLURM grace period, OOM killer) then leaves
    the previous ``last.ckpt`` intact instead of a truncated file that cannot be resumed from.
    Remote paths (``s3://`` etc.) fall back to Lightning's own writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        fs = get_filesystem(path)
        if storage_options is not None or "file" not in fs.protocol:
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _candidates(output_dir: Path) -> list[Path]:
    """``checkpoints/last.ckpt`` and Lightning's SLURM requeue checkpoints ``hpc_ckpt_N.ckpt``."""
    found = [output_dir / "checkpoints" / "last.ckpt"]
    found += [p for p in output_dir.glob("hpc_ckpt_*.ckpt") if _HPC.search(p.name)]
    return [p for p in found if p.is_file()]


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """What ``trainer.fit(ckpt_path=...)`` gets.

    ``"last"`` means "continue this run folder": the newest of ``checkpoints/last.ckpt`` and the
    ``hpc_ckpt_N.ckpt`` files Lightning writes when SLURM signals a requeue, or ``None`` (start from
    scratch) when the folder has none yet, so a first SLURM attempt and its requeued restarts can share
    one command line.  Anything else is passed through unchanged.
    """
    if ckpt_path != "last":
        return ckpt_path
    found = _candidates(Path(output_dir))
    if not found:
        log.info("ckpt_path=last: no checkpoint in %s yet, starting from scratch", output_dir)
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime_ns)
    log.info("ckpt_path=last: resuming from %s", newest)
    return str(newest)
