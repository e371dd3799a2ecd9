"""What the training modules share: manual optimisation with one optimizer per parameter role, the
learning-rate schedule, gradient clipping, the finite-loss check and CompressAI's auxiliary step.

Optimizer and schedule come from the model config (lightning-hydra-template style)::

    optimizer: {_target_: torch.optim.Adam, _partial_: true}    # called as optimizer(params, lr=<role's rate>)
    scheduler: null      # null: built from lr_schedule / lr_decay_start / lr_decay / lr_final

The rates stay flat keys (``model.lr``, ``model.aux_lr``, ``model.bias_lr``) because one optimizer
config serves every role with its own rate; experiments and sweeps set them, and the schedule keys.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nlic.codecs.base import LossyCodec
from nlic.lightning.schedules import schedule_config

#: ``model.optimizer`` when none is given
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True}


def to_plain(cfg: Any) -> Any:
    """A config as plain resolved containers (what checkpoints store); anything else unchanged."""
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


class CodecModule(pl.LightningModule):
    """Base of the LightningModules: ``self.codec`` trained by one optimizer per role.

    Roles (:meth:`parameter_roles`, in optimizer order): ``main`` (the training loss), ``aux``
    (:meth:`LossyCodec.aux_parameters`, trained by the codec's ``aux_loss``) and whatever a subclass
    adds; a role without parameters gets no optimizer.

    Args:
        hparams: the subclass's hyperparameters (saved in checkpoints, with ``optimizer``/``scheduler``).
        rates: base learning rate per role.
        grad_clip: max gradient norm of the clipped steps.
        lr_schedule, lr_decay_start, lr_decay, lr_final: the schedule when ``scheduler`` is None
            (:func:`nlic.lightning.schedules.schedule_config`).
        optimizer: a ``_partial_`` optimizer config (default Adam); the rate comes from ``rates``.
        scheduler: a schedule config (``nlic.lightning.schedules``), or None.
    """

    codec: torch.nn.Module

    def __init__(self, hparams: dict[str, Any], rates: dict[str, float], grad_clip: float = 1.0,
                 lr_schedule: str = "step", lr_decay_start: int | None = None, lr_decay: float = 0.9,
                 lr_final: float = 0.05, optimizer: Any = None, scheduler: Any = None) -> None:
        super().__init__()
        optimizer, scheduler = to_plain(optimizer), to_plain(scheduler)
        default_schedule = schedule_config(lr_schedule, lr_decay_start, lr_decay, lr_final)  # checks the name
        if optimizer and "lr" in optimizer:
            raise ValueError("model.optimizer.lr is not used: set model.lr (and aux_lr, bias_lr) instead")
        self.save_hyperparameters({
            **hparams, "grad_clip": grad_clip, "lr_schedule": lr_schedule, "lr_decay_start": lr_decay_start,
            "lr_decay": lr_decay, "lr_final": lr_final, "optimizer": optimizer, "scheduler": scheduler,
        })
        self.rates = dict(rates)
        self.schedule = instantiate(scheduler or default_schedule)
        self.automatic_optimization = False

    # ------------------------------------------------------------------ optimisers
    @property
    def lossy_codec(self) -> LossyCodec:
        """The codec whose ``aux_parameters`` / ``aux_loss`` the aux optimizer trains."""
        return self.codec  # type: ignore[return-value]

    def parameter_roles(self) -> dict[str, list[torch.nn.Parameter]]:
        """``{"main": ..., "aux": ...}``: every codec parameter in exactly one role."""
        aux = self.lossy_codec.aux_parameters()
        skip = {id(p) for p in aux}
        return {"main": [p for p in self.codec.parameters() if id(p) not in skip], "aux": aux}

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        make = instantiate({**(self.hparams.optimizer or DEFAULT_OPTIMIZER), "_partial_": True})
        roles = {role: params for role, params in self.parameter_roles().items() if params}
        self._opt_roles = list(roles)
        return [make(params, lr=self.rates[role]) for role, params in roles.items()]

    def optimizers_by_role(self) -> dict[str, Any]:
        opts = self.optimizers()
        return dict(zip(self._opt_roles, opts if isinstance(opts, list) else [opts]))

    def _apply_schedule(self, interval: str) -> None:
        if self.schedule.interval != interval:
            return
        factor = self.schedule.factor(self.trainer)
        for role, opt in self.optimizers_by_role().items():
            for group in opt.optimizer.param_groups if hasattr(opt, "optimizer") else opt.param_groups:
                group["lr"] = self.rates[role] * factor

    def on_train_epoch_start(self) -> None:
        self._apply_schedule("epoch")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._apply_schedule("step")

    # ------------------------------------------------------------------ steps
    def check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step}; "
                "lower the learning rate or check the data"
            )

    def optimize(self, opt: Any, loss: torch.Tensor, clip: bool = True) -> None:
        """One step of ``opt`` on ``loss`` (gradient norm clipped to ``grad_clip``)."""
        opt.zero_grad()
        self.manual_backward(loss)
        if clip:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
        opt.step()

    def aux_step(self, opts: dict[str, Any]) -> torch.Tensor:
        """CompressAI's auxiliary loss (bottleneck quantiles), stepped when the codec has an aux role."""
        aux_loss = self.lossy_codec.aux_loss()
        if "aux" in opts:
            self.optimize(opts["aux"], aux_loss, clip=False)
        return aux_loss
