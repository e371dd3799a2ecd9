"""Lossy-only mode: a lossy codec of ``conf/lossy`` trained and evaluated alone.

Loss ``codec.rd_loss``: ``lmbda * 255^2 * MSE + bpp`` (MSE of the [0, 1] image, so ``lmbda`` is on
8-bit units as in the near-lossless system and CompressAI's lambda table; the flow codec replaces it
with its delta-weighted loss, one model for every rate), plus CompressAI's auxiliary loss on the
bottleneck quantiles with its own optimizer (:class:`~nlic.lightning.base.CodecModule`).
Validation logs bpp (the model's estimate), PSNR and MS-SSIM of the 8-bit rounded output; after
training :func:`nlic.training.train` exports ``lossy_model.pt`` and codes real images
(``eval_results.json``: bpp from real bytes, PSNR, MS-SSIM, enc/dec s/MP).

    nlic-train experiment=lossy_only lossy=c2f lmbda=0.01
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nlic.codecs.base import LossyCodec
from nlic.eval.metrics import ms_ssim, psnr
from nlic.lightning.base import CodecModule, to_plain
from nlic.rate import bits_per_pixel, latent_bits
from nlic.system import lossy_to_uint8, pad_to_multiple


def rate_bpp(likelihoods: dict[str, torch.Tensor], num_pixels: int) -> torch.Tensor:
    """Bits per pixel of all latents: sum of ``-log2`` likelihoods over ``num_pixels``."""
    batch = next(iter(likelihoods.values())).shape[0] if likelihoods else 1
    return bits_per_pixel(latent_bits(likelihoods, batch), num_pixels)


class LossyOnlyModule(CodecModule):
    """Trains one lossy codec for rate-distortion.

    Args:
        lossy_config: a ``conf/lossy`` config (``_target_`` + arguments).
        lmbda: rate-distortion weight on the MSE in 8-bit units.
        lr, aux_lr: learning rates of the main and auxiliary (quantiles) optimizers.
        grad_clip, lr_schedule, lr_decay_start, lr_decay, lr_final, optimizer, scheduler: as
            :class:`~nlic.lightning.base.CodecModule`.
    """

    def __init__(self, lossy_config: Any, lmbda: float = 0.01, lr: float = 1e-4, aux_lr: float = 1e-3,
                 grad_clip: float = 1.0, lr_decay_start: int | None = None, lr_decay: float = 0.9,
                 lr_schedule: str = "step", lr_final: float = 0.05, optimizer: Any = None,
                 scheduler: Any = None) -> None:
        lossy_config = to_plain(lossy_config)
        super().__init__(
            {"lossy_config": lossy_config, "lmbda": lmbda, "lr": lr, "aux_lr": aux_lr},
            rates={"main": lr, "aux": aux_lr}, grad_clip=grad_clip, lr_schedule=lr_schedule,
            lr_decay_start=lr_decay_start, lr_decay=lr_decay, lr_final=lr_final, optimizer=optimizer,
            scheduler=scheduler,
        )
        self.codec: LossyCodec = instantiate(OmegaConf.create(lossy_config))

    # ------------------------------------------------------------------ training
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        x = batch.float() / 255.0
        out = self.codec(x)
        bpp = rate_bpp(out["likelihoods"], x.shape[0] * x.shape[-2] * x.shape[-1])
        mse_per_image = torch.mean((out["x_hat"] - x) ** 2, dim=(1, 2, 3))
        loss = self.codec.rd_loss(bpp, mse_per_image, out, self.hparams.lmbda)
        mse = mse_per_image.mean() * 255.0**2
        self.check_finite(loss)
        opts = self.optimizers_by_role()
        self.optimize(opts["main"], loss)
        aux_loss = self.aux_step(opts)
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
