"""Residual probability network: masked 7x7 context + 1x1 heads (plain and tau-conditioned).

The same modules serve two code paths: whole-image convolution in training/estimation and
gathered wavefront steps in real coding.  Layers act on channel-last tensors (``nn.Linear`` = a
1x1 convolution), so both paths share weights exactly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlic.residual.masks import context_taps, mask_tensor
from nlic.residual.mixture import params_per_sample

#: residuals are divided by this before entering the context convolution
CONTEXT_SCALE = 16.0
#: number of tau values with their own modulation in the conditioned head (tau > this reuses it)
MAX_CONDITIONED_TAU = 5


class MaskedContext(nn.Module):
    """7x7 masked convolution over the 3-channel residual (all channels of earlier pixels)."""

    def __init__(self, mask: str, channels: int, kernel: int = 7) -> None:
        super().__init__()
        self.kernel = kernel
        self.taps = context_taps(mask, kernel)
        self.channels = channels
        self.register_buffer("mask", torch.from_numpy(mask_tensor(mask, kernel)), persistent=False)
        self.weight = nn.Parameter(torch.randn(channels, 3, kernel, kernel) * (0.5 / max(1, len(self.taps))))
        self.bias = nn.Parameter(torch.zeros(channels))

    @property
    def empty(self) -> bool:
        return len(self.taps) == 0

    def forward(self, r: Tensor) -> Tensor:
        """Whole-image context: ``r`` is ``[B, 3, H, W]`` (one patch per batch item)."""
        if self.empty:
            return self.bias.view(1, -1, 1, 1).expand(r.shape[0], -1, *r.shape[-2:])
        w = self.weight * self.mask
        return F.conv2d(r / CONTEXT_SCALE, w, self.bias, padding=self.kernel // 2)

    def tap_weight(self) -> Tensor:
        """Weight as ``[channels, taps*3]`` in (tap, rgb) order, for gathered steps."""
        h = self.kernel // 2
        idx_i = torch.tensor([h + di for di, _ in self.taps], dtype=torch.long)
        idx_j = torch.tensor([h + dj for _, dj in self.taps], dtype=torch.long)
        w = self.weight[:, :, idx_i, idx_j]  # [C, 3, T]
        return w.permute(0, 2, 1).reshape(self.channels, -1)

    def gathered(self, r_pad: Tensor, rows: np.ndarray, cols: np.ndarray) -> Tensor:
        """Context of the pixels (rows, cols) of every patch.

        ``r_pad`` is ``[P, 3, 64+2h, 64+2h]`` (zero border); returns ``[P, n, channels]``.
        """
        P = r_pad.shape[0]
        n = len(rows)
        if self.empty:
            return self.bias.expand(P, n, -1)
        h = self.kernel // 2
        ii = torch.as_tensor(rows[None, :] + h + np.array([di for di, _ in self.taps])[:, None])
        jj = torch.as_tensor(cols[None, :] + h + np.array([dj for _, dj in self.taps])[:, None])
        vals = r_pad[:, :, ii, jj]  # [P, 3, T, n]
        vals = vals.permute(0, 3, 2, 1).reshape(P, n, -1) / CONTEXT_SCALE
        return F.linear(vals, self.tap_weight(), self.bias)


class MixtureHead(nn.Module):
    """Stack of 1x1 layers from ``cat(u, context)`` to mixture parameters.

    With ``num_taus > 0`` every hidden layer is modulated by a per-channel scale and bias looked
    up from a one-hot of tau (the bias-correction head of DLPR).
    """

    def __init__(self, in_ch: int, hidden: int, k: int, layers: int = 3, num_taus: int = 0) -> None:
        super().__init__()
        dims = [in_ch] + [hidden] * (layers - 1)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(dims[-1], params_per_sample(k))
        self.num_taus = num_taus
        if num_taus:
            self.film_scale = nn.ModuleList(nn.Linear(num_taus, hidden) for _ in self.hidden)
            self.film_bias = nn.ModuleList(nn.Linear(num_taus, hidden) for _ in self.hidden)
            for lin in list(self.film_scale) + list(self.film_bias):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(self, h: Tensor, tau: Tensor | None = None) -> Tensor:
        """``h`` is ``[..., in_ch]``; ``tau`` (int tensor broadcastable to ``h[..., 0]``) for FiLM."""
        onehot = None
        if self.num_taus:
            if tau is None:
                raise ValueError("the tau-conditioned head needs tau")
            t = tau.clamp(1, self.num_taus) - 1
            # one modulation vector per tau value, broadcast over pixels (not one per pixel)
            onehot = F.one_hot(t.long(), self.num_taus).to(h.dtype)
        for i, lin in enumerate(self.hidden):
            h = lin(h)
            if onehot is not None:
                h = h * (1.0 + self.film_scale[i](onehot)) + self.film_bias[i](onehot)
            h = F.leaky_relu(h, 0.2)
        return self.out(h)


class ResidualNetwork(nn.Module):
    """Context model + plain head + optional tau-conditioned head."""

    def __init__(
        self,
        feature_channels: int,
        mask: str = "3p",
        mixtures: int = 5,
        context_channels: int = 64,
        hidden: int = 128,
        layers: int = 3,
        bias_correction: bool = True,
    ) -> None:
        super().__init__()
        self.mask = mask
        self.mixtures = mixtures
        self.context = MaskedContext(mask, context_channels)
        in_ch = feature_channels + context_channels
        self.head = MixtureHead(in_ch, hidden, mixtures, layers)
        self.bias_correction = bias_correction
        self.tau_head = (
            MixtureHead(in_ch, hidden, mixtures, layers, num_taus=MAX_CONDITIONED_TAU)
            if bias_correction
            else None
        )

    def raw_params(self, features: Tensor, context: Tensor, tau: int | Tensor = 0) -> Tensor:
        """Channel-last features/context -> raw mixture parameters, choosing the head by tau.

        ``tau`` is an int (one head for all) or an int tensor per item (tau head only).
        """
        h = torch.cat([features, context], dim=-1)
        if isinstance(tau, int):
            if tau == 0 or self.tau_head is None:
                return self.head(h)
            tau = torch.tensor(tau)
        if self.tau_head is None:
            raise ValueError("bias correction is off: no tau-conditioned head")
        return self.tau_head(h, tau)
