"""LightningModule wrapping :class:`~nlic.system.NearLosslessCodec`.

Up to three optimizers (manual optimisation): the main one (lossy codec + residual network, loss
``lmbda*MSE + bpp``), CompressAI's auxiliary one (bottleneck quantiles; absent when the codec has
none, e.g. c2f) and the bias-correction head's own one (likelihood of the original residual given
quantized context, inputs detached).
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F

from nlic.codecs.base import LossyCodec
from nlic.eval.metrics import psnr
from nlic.lightning.base import CodecModule, to_plain
from nlic.model_io import build_codec
from nlic.rate import bits_per_pixel, latent_bits
from nlic.scaleout.precision import keep_likelihoods_fp32


class NearLosslessModule(CodecModule):
    def __init__(
        self,
        model_config: Any,
        lmbda: float = 0.03,
        lr: float = 1e-4,
        aux_lr: float = 1e-3,
        bias_lr: float = 1e-4,
        grad_clip: float = 1.0,
        val_taus: Any = (0, 1, 2, 3, 4, 5),
        bias_taus: Any = (1, 2, 3, 4, 5),
        lr_decay_start: int | None = None,
        lr_decay: float = 0.9,
        lr_schedule: str = "step",
        lr_final: float = 0.05,
        train_heads: str = "all",
        linear_init: bool = False,
        optimizer: Any = None,
        scheduler: Any = None,
    ) -> None:
        model_config = to_plain(model_config)
        super().__init__(
            {"model_config": model_config, "lmbda": lmbda, "lr": lr, "aux_lr": aux_lr, "bias_lr": bias_lr,
             "val_taus": list(to_plain(val_taus)), "bias_taus": list(to_plain(bias_taus)),
             "train_heads": train_heads, "linear_init": linear_init},
            rates={"main": lr, "aux": aux_lr, "bias": bias_lr}, grad_clip=grad_clip, lr_schedule=lr_schedule,
            lr_decay_start=lr_decay_start, lr_decay=lr_decay, lr_final=lr_final, optimizer=optimizer,
            scheduler=scheduler,
        )
        if train_heads not in ("all", "plain", "tau"):
            raise ValueError(f"train_heads must be 'all', 'plain' or 'tau', got {train_heads!r}")
        self.codec = build_codec(model_config)
        keep_likelihoods_fp32(self.codec)  # entropy models stay float32 under bf16-mixed

    # ------------------------------------------------------------------ optimisers
    @property
    def lossy_codec(self) -> LossyCodec:
        return self.codec.lossy

    def parameter_roles(self) -> dict[str, list[torch.nn.Parameter]]:
        """main, aux and ``bias`` (the tau head); ``train_heads``: "plain" leaves the tau head untouched,
        "tau" trains the tau head alone (its inputs are detached, so it can be trained after, or beside,
        the main model)."""
        aux = self.lossy_codec.aux_parameters()
        bias = list(self.codec.residual.tau_head.parameters()) if self.codec.residual.tau_head else []
        skip = {id(p) for p in aux + bias}
        main = [p for p in self.codec.parameters() if id(p) not in skip]
        if self.hparams.train_heads == "plain":
            bias = []
        elif self.hparams.train_heads == "tau":
            main, aux = [], []
        return {"main": main, "aux": aux, "bias": bias}

    # ------------------------------------------------------------------ training
    def _rates(self, out: dict, x: torch.Tensor) -> dict[str, torch.Tensor]:
        num_px = x.shape[0] * x.shape[-2] * x.shape[-1]
        latent = bits_per_pixel(latent_bits(out["likelihoods"], x.shape[0], x.device), num_px)
        residual = bits_per_pixel(out["residual_bits"], num_px)
        return {"bpp_latent": latent, "bpp_residual": residual, "bpp": latent + residual}

    def on_fit_start(self) -> None:
        """``linear_init``: start each head's linear mean prediction from the least-squares predictor
        of a few training batches (a fresh run only: resumed and warm-started runs keep theirs)."""
        if not self.hparams.linear_init or self.global_step > 0 or getattr(self, "_warm_started", False):
            return
        from nlic.residual.network import fit_linear_predictor

        loader = self.trainer.datamodule.train_dataloader()
        batches = []
        for batch in loader:
            batches.append(batch.float())
            if sum(len(b) for b in batches) >= 256:
                break
        x = torch.cat(batches).to(self.device)
        r = x - self._lossy_image(x)
        for head in (self.codec.residual.head, self.codec.residual.tau_head):
            if head is not None:
                fit_linear_predictor(head, r.cpu())

    @torch.no_grad()
    def _lossy_image(self, x: torch.Tensor) -> torch.Tensor:
        from nlic.system import lossy_to_uint8

        return lossy_to_uint8(self.codec.lossy(x / 255.0)["x_hat"].float())

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        x = batch.float()
        opts = self.optimizers_by_role()
        bias_tau = None
        if self.codec.residual.tau_head is not None and self.hparams.train_heads != "plain":
            taus = self.hparams.bias_taus
            bias_tau = torch.tensor([random.choice(taus) for _ in range(x.shape[0])], device=x.device)
        out = self.codec(x, bias_tau)
        rates = self._rates(out, x)
        mse = F.mse_loss(out["x_hat"] * 255.0, x)
        loss = self.hparams.lmbda * mse + rates["bpp"]
        self.check_finite(loss)
        if "main" in opts:
            self.optimize(opts["main"], loss)
        aux_loss = self.aux_step(opts)

        logs = {
            "train/loss": loss.detach(), "train/aux_loss": aux_loss.detach(), "train/mse": mse.detach(),
            "train/psnr_lossy": 10 * torch.log10(255.0**2 / mse.detach().clamp_min(1e-10)),
            **{f"train/{k}": v.detach() for k, v in rates.items()},
        }
        if bias_tau is not None and "bias" in opts:
            bias_bpp = out["bias_bits"].sum() / (x.shape[0] * x.shape[-2] * x.shape[-1])
            self.optimize(opts["bias"], bias_bpp)
            logs["train/bias_head_bpp"] = bias_bpp.detach()
        self.log_dict(logs, prog_bar=False, on_step=True, on_epoch=False, batch_size=x.shape[0])
        self.log("bpp", rates["bpp"].detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=x.shape[0])
        return loss

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        """Estimated rate of whole images (any size) at every tau of ``val_taus``.

        The image is replicate-padded to a multiple of ``codec.pad_multiple`` as the coder pads it,
        and the estimated bits of the PADDED image are divided by the ORIGINAL pixel count: the
        padded latents are a real cost, but the padded residuals (at most 63 rows and columns, which
        the coder does not code) are charged too, so ``val/bpp`` slightly overestimates the coded
        rate of images whose sides are not multiples of 64.  Reconstruction metrics (PSNR, max
        error) cover the original pixels only.
        """
        from nlic.system import pad_to_multiple

        x = batch.float()
        H, W = x.shape[-2:]
        num_px = H * W
        xp = pad_to_multiple(x, self.codec.pad_multiple)
        every_tau = 0.0
        for tau in self.hparams.val_taus:
            est = self.codec.estimate(xp, int(tau))
            bpp = (est["latent_bits"] + est["residual_bits"]).sum() / (x.shape[0] * num_px)
            every_tau = every_tau + bpp
            x_rec = est["x_rec"][..., :H, :W]
            max_err = (x_rec - x).abs().amax()
            self.log_dict(
                {
                    f"val/bpp_tau{tau}": bpp, f"val/bpsp_tau{tau}": bpp / 3,
                    f"val/psnr_tau{tau}": psnr(x_rec, x),
                },
                on_epoch=True, sync_dist=True, batch_size=x.shape[0],
            )
            # the bound is a worst case: reduce with max over batches and ranks, never a mean
            self.log(f"val/max_err_tau{tau}", max_err.float(), on_epoch=True, sync_dist=True,
                     reduce_fx="max", batch_size=x.shape[0])
            if int(tau) == min(int(t) for t in self.hparams.val_taus):  # the selection metric
                self.log("val/bpp", bpp, on_epoch=True, sync_dist=True, prog_bar=True, batch_size=x.shape[0])
                self.log("val/psnr_lossy", psnr(est["x_hat"][..., :H, :W], x), on_epoch=True, sync_dist=True,
                         batch_size=x.shape[0])
        # a selection metric for models that serve every tau (the lowest tau's alone picked, in one
        # anneal of the default model, a checkpoint 0.2-0.3 % worse at tau >= 1 than the run's last)
        self.log("val/bpp_mean_tau", every_tau / len(self.hparams.val_taus), on_epoch=True, sync_dist=True,
                 batch_size=x.shape[0])
