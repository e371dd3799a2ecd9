"""Learning-rate schedules: a factor on each optimizer's base rate (``model.lr``, ``aux_lr``, ``bias_lr``).

A schedule is built from ``model.scheduler`` (a ``_target_`` config) and applied by
:class:`nlic.lightning.base.CodecModule` at every epoch (``interval = "epoch"``) or training batch
(``"step"``).  It is stateless: the factor follows from the trainer's epoch and step counters, so a
resumed run (``ckpt_path=last``) continues the same curve, whatever checkpoint it resumes from.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Timer


class StepDecay:
    """``decay ** (epoch - start + 1)`` from epoch ``start`` on; ``start=None``: a constant rate."""

    interval = "epoch"

    def __init__(self, start: int | None = None, decay: float = 0.9) -> None:
        self.start, self.decay = start, float(decay)

    def factor(self, trainer: pl.Trainer) -> float:
        if self.start is None or trainer.current_epoch < self.start:
            return 1.0
        return self.decay ** (trainer.current_epoch - self.start + 1)


class CosineDecay:
    """Cosine from 1 down to ``final`` over ``trainer.max_steps`` optimizer steps (else the estimated total).

    ``warmup``: the first ``warmup`` steps ramp the factor up linearly.  A warm start needs it:
    Adam's first updates move every weight by about the full rate whatever its gradient, which
    throws a trained model far off (measured: a shipped head fine-tuned at 3e-4 without warm-up
    went from 1.53 to 6.1 bpp in 40 steps and ended above where it started).
    """

    interval = "step"

    def __init__(self, final: float = 0.05, warmup: int = 0) -> None:
        self.final, self.warmup = float(final), int(warmup)

    def factor(self, trainer: pl.Trainer) -> float:
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if total is None:
            total = max(1, trainer.estimated_stepping_batches)
        return self.warmed(trainer, self.at(min(1.0, trainer.global_step / total)))

    def warmed(self, trainer: pl.Trainer, factor: float) -> float:
        if self.warmup <= 0:
            return factor
        return factor * min(1.0, (trainer.global_step + 1) / self.warmup)

    def at(self, progress: float) -> float:
        """The factor at ``progress`` (0 .. 1) of the way."""
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * progress))


class WallClockCosineDecay(CosineDecay):
    """Cosine from 1 down to ``final`` over the run's time budget (``trainer.max_time``): for a run
    sized by the clock rather than by steps (a GPU lent for minutes, whose step rate is not known
    beforehand), the rate anneals by the end whatever the throughput.  Follows Lightning's timer, which
    a resumed run restores; without ``max_time`` it is :class:`CosineDecay` (not reproducible step
    for step: the factor depends on the wall clock)."""

    def factor(self, trainer: pl.Trainer) -> float:
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        remaining = None if timer is None else timer.time_remaining("train")
        if remaining is None or timer.start_time("train") is None:
            return super().factor(trainer)
        elapsed = timer.time_elapsed("train")
        return self.warmed(trainer, self.at(min(1.0, elapsed / max(elapsed + remaining, 1e-9))))


def schedule_config(lr_schedule: str = "step", lr_decay_start: int | None = None, lr_decay: float = 0.9,
                    lr_final: float = 0.05) -> dict:
    """The ``scheduler`` config the flat keys ``model.lr_schedule``, ``lr_decay_start``, ``lr_decay`` and
    ``lr_final`` stand for (experiments and sweeps set those)."""
    if lr_schedule == "step":
        return {"_target_": f"{__name__}.StepDecay", "start": lr_decay_start, "decay": lr_decay}
    if lr_schedule == "cosine":
        return {"_target_": f"{__name__}.CosineDecay", "final": lr_final}
    if lr_schedule == "cosine_time":
        return {"_target_": f"{__name__}.WallClockCosineDecay", "final": lr_final}
    raise ValueError(f"lr_schedule must be 'step', 'cosine' or 'cosine_time', got {lr_schedule!r}")
