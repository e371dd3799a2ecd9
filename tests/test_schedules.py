"""Learning-rate schedules: the factor on each optimizer's base rate."""

from __future__ import annotations

import math
import time

import pytest
import pytorch_lightning as pl
from hydra.utils import instantiate
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.trainer.states import RunningStage

from nlic.lightning.schedules import CosineDecay, WallClockCosineDecay, schedule_config


def test_wall_clock_cosine_anneals_over_the_trainers_time_budget() -> None:
    """With ``max_time`` the factor follows the elapsed share of the budget (Lightning's timer), not
    the step count; past the budget it stays at ``final``; without a budget it is the step cosine."""
    trainer = pl.Trainer(max_time="00:00:01:40", max_steps=10_000, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    timer = next(c for c in trainer.callbacks if isinstance(c, Timer))
    schedule = instantiate(schedule_config("cosine_time", lr_final=0.1))
    assert isinstance(schedule, WallClockCosineDecay)
    assert schedule.factor(trainer) == pytest.approx(1.0)  # not started: step 0 of the step cosine
    for elapsed, share in ((25.0, 0.25), (50.0, 0.5), (99.0, 0.99)):
        timer._start_time[RunningStage.TRAINING] = time.monotonic() - elapsed
        want = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * share))
        assert schedule.factor(trainer) == pytest.approx(want, abs=2e-3)
        assert schedule.factor(trainer) != pytest.approx(CosineDecay(0.1).factor(trainer), abs=1e-3)  # (step 0: 1.0)
    timer._start_time[RunningStage.TRAINING] = time.monotonic() - 500.0
    assert schedule.factor(trainer) == pytest.approx(0.1)
    untimed = pl.Trainer(max_steps=1000, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    assert schedule.factor(untimed) == CosineDecay(0.1).factor(untimed)


def test_unknown_schedule_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="cosine_time"):
        schedule_config("linear")


def test_warmup_ramps_the_rate_up_then_follows_the_cosine() -> None:
    """``warmup`` steps ramp the factor linearly (a warm start is thrown off by Adam's first, full-size
    updates), then it is the plain cosine; without it nothing changes."""

    class Steps:
        max_steps = 1000
        global_step = 0

    trainer = Steps()
    warm, plain = CosineDecay(0.1, warmup=100), CosineDecay(0.1)
    assert warm.factor(trainer) == pytest.approx(0.01 * plain.factor(trainer))
    trainer.global_step = 49
    assert warm.factor(trainer) == pytest.approx(0.5 * plain.factor(trainer))
    for step in (99, 500, 999):
        trainer.global_step = step
        assert warm.factor(trainer) == pytest.approx(plain.factor(trainer))
    assert CosineDecay(0.1, warmup=0).factor(trainer) == plain.factor(trainer)
