"""Progress of a training run: rich bars in a terminal, one log line per epoch wherever output goes.

Both are callbacks of ``conf/callbacks/default.yaml``.  The log line reaches the console and the
run's ``train.log`` (Hydra's job logging), so a SLURM job or ``nlic-train ... > run.log`` shows::

    epoch 3/8 | step 96 | train bpp 4.213 | val bpp tau0 3.901, tau1 2.954 | 0:01:12 elapsed, ETA 0:02:40
"""

from __future__ import annotations

import logging
import re
import sys
import time
from datetime import timedelta
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar, Timer

log = logging.getLogger("nlic.train")

_VAL_BPP = re.compile(r"^val/bpp_tau(\d+)$")


def duration(seconds: float) -> str:
    """``0:01:12`` (hours:minutes:seconds)."""
    return str(timedelta(seconds=round(max(0.0, seconds))))


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def validation_summary(metrics: dict[str, Any]) -> str:
    """``val bpp tau0 3.901, tau1 2.954`` from logged metrics (lossy-only runs: ``val bpp 0.41, PSNR 31.2 dB``)."""
    per_tau = sorted((int(m.group(1)), _number(v)) for k, v in metrics.items() if (m := _VAL_BPP.match(k)))
    if per_tau:
        return "val bpp " + ", ".join(f"tau{t} {v:.3f}" for t, v in per_tau if v is not None)
    parts = [f"{name} {fmt.format(v)}" for key, name, fmt in (("val/bpp", "val bpp", "{:.4f}"),
                                                              ("val/psnr", "PSNR", "{:.2f} dB"))
             if (v := _number(metrics.get(key))) is not None]
    return ", ".join(parts)


class _CurrentStream:
    """Writes to whatever ``sys.stdout`` / ``sys.stderr`` is now: while rich shows a live bar, its proxy,
    which prints each line above the bar instead of through it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, text: str) -> int:
        return getattr(sys, self.name).write(text)

    def flush(self) -> None:
        getattr(sys, self.name).flush()


class TerminalProgressBar(RichProgressBar):
    """Lightning's rich progress bars when stdout is a terminal; nothing otherwise (a log file or a
    SLURM output would only collect redraws: :class:`EpochLog` writes lines there).  While the bars
    run, console log handlers write through rich, so log lines do not garble the bars."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._swapped: list[tuple[logging.StreamHandler, Any]] = []
        if not sys.stdout.isatty():
            self.disable()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.is_enabled:
            return
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler:  # not FileHandler (a subclass): log files stay as they are
                for name in ("stdout", "stderr"):
                    if handler.stream is getattr(sys, name):
                        self._swapped.append((handler, handler.setStream(_CurrentStream(name))))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        for handler, stream in self._swapped:
            handler.setStream(stream)
        self._swapped = []


class EpochLog(pl.Callback):
    """One log line per training epoch (rank 0): step, mean train bpp of the epoch, validation bpp per
    tau, time elapsed and the estimated time left (from whichever of max_epochs, max_steps and
    max_time ends the run first)."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._first_epoch = 0
        self._first_step = 0
        self._bpp: list[float] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.monotonic()
        self._first_epoch, self._first_step = trainer.current_epoch, trainer.global_step

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._bpp = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        # Lightning publishes a step's logged values after on_train_batch_end: read the previous batch's here
        if batch_idx > 0:
            self._record(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer)  # the epoch's last batch
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        epoch = trainer.current_epoch + 1
        parts = [f"epoch {epoch}/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0
                 else f"epoch {epoch}", f"step {trainer.global_step}"]
        if self._bpp:
            parts.append(f"train bpp {sum(self._bpp) / len(self._bpp):.3f}")
        val = validation_summary(metrics)
        if val:
            parts.append(val)
        elapsed = time.monotonic() - self._start
        eta = self._eta(trainer, elapsed)
        parts.append(f"{duration(elapsed)} elapsed" + (f", ETA {duration(eta)}" if eta is not None else ""))
        log.info(" | ".join(parts))

    def _record(self, trainer: pl.Trainer) -> None:
        value = _number(trainer.callback_metrics.get("train/bpp"))
        if value is not None:
            self._bpp.append(value)

    def _eta(self, trainer: pl.Trainer, elapsed: float) -> float | None:
        done = []  # fraction of this session's work done, per stopping rule
        epochs = (trainer.max_epochs or -1) - self._first_epoch
        if trainer.max_epochs and trainer.max_epochs > 0 and epochs > 0:
            done.append((trainer.current_epoch + 1 - self._first_epoch) / epochs)
        steps = trainer.max_steps - self._first_step
        if trainer.max_steps and trainer.max_steps > 0 and steps > 0:
            done.append((trainer.global_step - self._first_step) / steps)
        for cb in trainer.callbacks:
            if isinstance(cb, Timer):
                left = cb.time_remaining()
                if left is not None:
                    done.append(elapsed / max(elapsed + left, 1e-9))
        fraction = max(done, default=0.0)
        if fraction <= 0:
            return None
        return elapsed * (1 - min(fraction, 1.0)) / fraction
