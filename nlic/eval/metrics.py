"""Image-quality metrics on 8-bit images: PSNR and MS-SSIM (pytorch_msssim's, as CompressAI's
evaluation uses), with fewer scales for images too small for the standard five."""

from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_msssim import ms_ssim as _ms_ssim
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim
from torch import Tensor

#: the standard MS-SSIM scale weights (Wang et al. 2003)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WIN_SIZE = 11


def ms_ssim_levels(height: int, width: int, win_size: int = WIN_SIZE) -> int:
    """Number of scales (1..5) an image of this size supports (5 needs a side > 160)."""
    side = min(height, width)
    if side > (win_size - 1) * 2**4:
        return len(MS_SSIM_WEIGHTS)
    levels = 1
    while levels < len(MS_SSIM_WEIGHTS) and side // 2**levels >= win_size:
        levels += 1
    return levels


def ms_ssim(a: Tensor, b: Tensor, data_range: float = 255.0) -> Tensor:
    """MS-SSIM of ``[B, C, H, W]`` images, averaged over the batch.

    Images with a side > 160 get the standard 5-scale MS-SSIM (``pytorch_msssim.ms_ssim``);
    smaller ones the largest number of scales whose coarsest level still holds an 11x11 window,
    weights renormalised (sides under 11 px: SSIM with a smaller window).
    """
    a, b = a.float(), b.float()
    H, W = a.shape[-2:]
    levels = ms_ssim_levels(H, W)
    if levels == len(MS_SSIM_WEIGHTS):
        return _ms_ssim(a, b, data_range=data_range, size_average=True)
    win_size = WIN_SIZE if min(H, W) >= WIN_SIZE else max(1, min(H, W) // 2 * 2 - 1)
    win = _fspecial_gauss_1d(win_size, 1.5).repeat([a.shape[1], 1, 1, 1])
    weights = a.new_tensor(MS_SSIM_WEIGHTS[:levels])
    weights = weights / weights.sum()
    mcs = []
    for i in range(levels):
        ssim_per_channel, cs = _ssim(a, b, data_range=data_range, win=win, size_average=False, K=(0.01, 0.03))
        if i < levels - 1:
            mcs.append(torch.relu(cs))
            padding = [s % 2 for s in a.shape[2:]]
            a = torch.nn.functional.avg_pool2d(a, kernel_size=2, padding=padding)
            b = torch.nn.functional.avg_pool2d(b, kernel_size=2, padding=padding)
    stack = torch.stack([*mcs, torch.relu(ssim_per_channel)], dim=0)
    return torch.prod(stack ** weights.view(-1, 1, 1), dim=0).mean()


def ms_ssim_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two ``H x W x C`` uint8 images."""
    ta = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()
    tb = torch.from_numpy(np.ascontiguousarray(b)).permute(2, 0, 1)[None].float()
    return float(ms_ssim(ta, tb))


def psnr(a: Tensor, b: Tensor, data_range: float = 255.0) -> Tensor:
    """PSNR (dB) of two tensors on the 0..``data_range`` scale (capped at 100 dB when equal)."""
    mse = torch.mean((a.float() - b.float()) ** 2)
    return (10 * torch.log10(data_range**2 / mse.clamp_min(1e-10))).clamp(max=100.0)


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two 8-bit images; ``inf`` when they are identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float | None:
    """PSNR (dB) of two uint8 images; ``None`` (JSON-friendly) when they are identical."""
    p = psnr_db(a, b)
    return None if math.isinf(p) else p
