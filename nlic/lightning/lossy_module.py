"""Lossy-only mode: a lossy codec of ``conf/lossy`` trained and evaluated alone.

Loss ``codec.rd_loss``: ``lmbda * 255^2 * MSE + bpp`` (MSE of the [0, 1] image, so ``lmbda`` is on
8-bit units as in the near-lossless system and CompressAI's lambda table; the flow codec replaces it
with its delta-weighted loss, one model for every rate), plus CompressAI's auxiliary loss on the
bottleneck quantiles with its own optimizer (manual optimisation, as the near-lossless module).
Validation logs bpp (the model's estimate), PSNR and MS-SSIM of the 8-bit rounded output; after
training :meth:`LossyOnlyModule.after_training` exports ``lossy_model.pt`` and codes real images
(``eval_results.json``: bpp from real bytes, PSNR, MS-SSIM, enc/dec s/MP).

    nlic-train experiment=lossy_only lossy=c2f lmbda=0.01
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nlic.codecs.base import LossyCodec
from nlic.eval.metrics import ms_ssim, psnr
from nlic.rate import bits_per_pixel, latent_bits
from nlic.system import lossy_to_uint8, pad_to_multiple

log = logging.getLogger("nlic.train")


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def rate_bpp(likelihoods: dict[str, torch.Tensor], num_pixels: int) -> torch.Tensor:
    """Bits per pixel of all latents: sum of ``-log2`` likelihoods over ``num_pixels``."""
    batch = next(iter(likelihoods.values())).shape[0] if likelihoods else 1
    return bits_per_pixel(latent_bits(likelihoods, batch), num_pixels)


class LossyOnlyModule(pl.LightningModule):
    """Trains one lossy codec for rate-distortion.

    Args:
        lossy_config: a ``conf/lossy`` config (``_target_`` + arguments).
        lmbda: rate-distortion weight on the MSE in 8-bit units.
        lr, aux_lr: learning rates of the main and auxiliary (quantiles) optimizers.
        grad_clip: max gradient norm of the main optimizer.
        lr_decay_start, lr_decay: from epoch ``lr_decay_start`` on, multiply the lr by ``lr_decay``
            every epoch (``None``: constant).
    """

    def __init__(self, lossy_config: Any, lmbda: float = 0.01, lr: float = 1e-4, aux_lr: float = 1e-3,
                 grad_clip: float = 1.0, lr_decay_start: int | None = None, lr_decay: float = 0.9) -> None:
        super().__init__()
        lossy_config = _plain(lossy_config)
        self.save_hyperparameters({
            "lossy_config": lossy_config, "lmbda": lmbda, "lr": lr, "aux_lr": aux_lr, "grad_clip": grad_clip,
            "lr_decay_start": lr_decay_start, "lr_decay": lr_decay,
        })
        self.codec: LossyCodec = instantiate(OmegaConf.create(lossy_config))
        self.automatic_optimization = False

    # ------------------------------------------------------------------ optimisers
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        aux = [p for n, p in self.codec.named_parameters() if n.endswith(".quantiles")]
        skip = {id(p) for p in aux}
        main = [p for p in self.codec.parameters() if id(p) not in skip]
        opts = [torch.optim.Adam(main, lr=self.hparams.lr)]
        if aux:  # c2f has no EntropyBottleneck
            opts.append(torch.optim.Adam(aux, lr=self.hparams.aux_lr))
        return opts

    def _opts(self) -> list:
        opts = self.optimizers()
        return opts if isinstance(opts, list) else [opts]

    def on_train_epoch_start(self) -> None:
        start = self.hparams.lr_decay_start
        if start is None or self.current_epoch < start:
            return
        factor = self.hparams.lr_decay ** (self.current_epoch - start + 1)
        for opt, base in zip(self._opts(), (self.hparams.lr, self.hparams.aux_lr)):
            for group in opt.optimizer.param_groups if hasattr(opt, "optimizer") else opt.param_groups:
                group["lr"] = base * factor

    # ------------------------------------------------------------------ training
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        x = batch.float() / 255.0
        out = self.codec(x)
        bpp = rate_bpp(out["likelihoods"], x.shape[0] * x.shape[-2] * x.shape[-1])
        mse_per_image = torch.mean((out["x_hat"] - x) ** 2, dim=(1, 2, 3))
        loss = self.codec.rd_loss(bpp, mse_per_image, out, self.hparams.lmbda)
        mse = mse_per_image.mean() * 255.0**2
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step}; "
                "lower the learning rate or check the data"
            )
        opts = self._opts()
        opts[0].zero_grad()
        self.manual_backward(loss)
        self.clip_gradients(opts[0], gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
        opts[0].step()
        aux_loss = self.codec.aux_loss()
        if len(opts) > 1:
            opts[1].zero_grad()
            self.manual_backward(aux_loss)
            opts[1].step()
        self.log_dict(
            {
                "train/loss": loss.detach(), "train/bpp": bpp.detach(), "train/mse": mse.detach(),
                "train/psnr": 10 * torch.log10(255.0**2 / mse.detach().clamp_min(1e-10)),
                "train/aux_loss": aux_loss.detach(),
            },
            on_step=True, on_epoch=False, batch_size=x.shape[0],
        )
        return loss

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        x = batch.float()
        H, W = x.shape[-2:]
        out = self.codec(pad_to_multiple(x, self.codec.pad_multiple) / 255.0)
        bpp = rate_bpp(out["likelihoods"], x.shape[0] * H * W)
        x_hat = lossy_to_uint8(out["x_hat"])[..., :H, :W]  # the 8-bit output a decoder writes
        mse_per_image = torch.mean(((x_hat - x) / 255.0) ** 2, dim=(1, 2, 3))
        self.log_dict(
            {
                "val/bpp": bpp, "val/psnr": psnr(x_hat, x), "val/ms_ssim": ms_ssim(x_hat, x),
                "val/loss": self.codec.rd_loss(bpp, mse_per_image, out, self.hparams.lmbda),
            },
            on_epoch=True, sync_dist=True, prog_bar=True, batch_size=x.shape[0],
        )

    # ------------------------------------------------------------------ after training
    def after_training(self, cfg: DictConfig, output_dir: Path, loggers: list) -> dict:
        """Rank 0, called by :func:`nlic.training.train`: export ``lossy_model.pt`` and evaluate it by
        real coding (``eval_results.json/csv/md``); returns ``eval/*`` metrics."""
        from nlic.eval.lossy import evaluate_lossy, save_lossy_model, write_lossy_results

        if not cfg.get("export", True):
            return {}
        codec = self.codec.cpu().eval()
        model_path = output_dir / "lossy_model.pt"
        save_lossy_model(codec, {"lossy": self.hparams.lossy_config}, model_path,
                         meta={"task": cfg.task_name, "lmbda": self.hparams.lmbda})
        log.info("exported lossy model to %s", model_path)
        if not cfg.evaluate.enabled:
            return {}
        from nlic.data.images import load_folder
        from nlic.eval.evaluate import crop_images

        images = crop_images(load_folder(cfg.evaluate.root)[: cfg.evaluate.max_images], cfg.evaluate.get("crop"))
        rows, summary = evaluate_lossy(model_path, images)
        write_lossy_results(rows, summary, output_dir)
        scalars = {f"eval/{k}": float(v) for k, v in summary.items()
                   if isinstance(v, (int, float)) and math.isfinite(float(v))}
        for lg in loggers:
            if type(lg).__name__ == "WandbLogger":
                import wandb

                cols = list(rows[0])
                table = wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in rows])
                lg.experiment.log({"eval/results": table})
                lg.experiment.log(scalars)
                lg.experiment.summary.update(scalars)
            else:
                lg.log_metrics(scalars)
        return scalars
