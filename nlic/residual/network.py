"""Residual probability network: masked context, an MLP trunk and one head per colour channel.

For every pixel the network sees the already-coded residuals of its causal neighbourhood (a
masked ``kernel x kernel`` convolution over all three channels), the lossy layer's features ``u``
when there is a lossy layer, and, for G and B, the current pixel's already-coded channels (R for
G; R and G for B).  Each channel gets a logistic mixture whose means also receive a linear
prediction from the context taps and the current pixel (a learned linear predictor that the MLP
refines).

Two heads of the same topology: the plain head (trained on the original residual) codes tau = 0;
the tau-conditioned head (every hidden layer modulated by a per-tau scale and bias, DLPR's bias
correction) codes tau >= 1 from quantized context.  The same modules run on whole images
(training, estimation, encoding) and on gathered pixels (wavefront decoding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlic.residual.masks import context_taps, mask_tensor
from nlic.residual.mixture import MEAN_SCALE, MixtureParams, params_per_channel

#: residuals are divided by this before entering the network
CONTEXT_SCALE = 16.0
#: number of tau values with their own modulation in the conditioned head (tau > this reuses it)
MAX_CONDITIONED_TAU = 5
CHANNELS = 3


def _record(record: dict[str, float] | None, name: str, act: Tensor) -> None:
    if record is not None and act.numel():
        record[name] = max(record.get(name, 0.0), float(act.detach().amax()))


class FiLM(nn.Module):
    """Per-tau scale and bias of a hidden layer (zero-initialised: starts as the identity)."""

    def __init__(self, num_taus: int, width: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(num_taus, width))
        self.bias = nn.Parameter(torch.zeros(num_taus, width))

    def forward(self, h: Tensor, tau_index: Tensor) -> Tensor:
        """``h`` ``[B, ..., width]``; ``tau_index`` ``[B]`` (0-based) picks one vector per item."""
        shape = (tau_index.shape[0],) + (1,) * (h.dim() - 2) + (h.shape[-1],)
        return h * (1.0 + self.scale[tau_index].view(shape)) + self.bias[tau_index].view(shape)


class ContextHead(nn.Module):
    """Masked context + trunk + per-channel mixture heads (one complete probability model).

    Args:
        feature_channels: channels of the lossy features ``u`` (0: no lossy layer).
        mask: context mask name (see :mod:`nlic.residual.masks`).
        mixtures: logistic components per channel.
        context_channels: width of the context layer.
        hidden: width of the trunk layers.
        layers: number of trunk layers after the context layer.
        channel_hidden: width of each channel's hidden layer.
        channel_conditioning: G and B heads see the current pixel's decoded R (and G).
        num_taus: > 0 adds a per-tau modulation of every hidden layer.
        kernel: context window size.
    """

    def __init__(self, feature_channels: int, mask: str, mixtures: int, context_channels: int, hidden: int,
                 layers: int, channel_hidden: int, channel_conditioning: bool, num_taus: int = 0,
                 kernel: int = 7) -> None:
        super().__init__()
        self.mixtures = mixtures
        self.kernel = kernel
        self.taps = context_taps(mask, kernel)
        self.context_channels = context_channels
        self.channel_conditioning = channel_conditioning
        self.num_taus = num_taus
        self.register_buffer("mask", torch.from_numpy(mask_tensor(mask, kernel)), persistent=False)
        # context layer outputs context_channels features + one linear mean prediction per channel
        n_taps = max(1, len(self.taps))
        self.context_weight = nn.Parameter(torch.randn(context_channels + CHANNELS, CHANNELS, kernel, kernel)
                                           * (1.0 / (3 * n_taps)) ** 0.5)
        self.context_bias = nn.Parameter(torch.zeros(context_channels + CHANNELS))
        self.features_in = nn.Linear(feature_channels, context_channels, bias=False) if feature_channels else None
        widths = [context_channels] + [hidden] * layers
        self.trunk = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        cur = [c if channel_conditioning else 0 for c in range(CHANNELS)]
        self.channel_in = nn.ModuleList(nn.Linear(widths[-1] + n, channel_hidden) for n in cur)
        self.channel_out = nn.ModuleList(nn.Linear(channel_hidden, params_per_channel(mixtures))
                                         for _ in range(CHANNELS))
        # linear mean prediction from the current pixel's decoded channels (G <- R; B <- R, G)
        self.current_skip = nn.ParameterList(nn.Parameter(torch.zeros(n)) for n in cur)
        if num_taus:
            self.film = nn.ModuleList(FiLM(num_taus, w) for w in [context_channels] + widths[1:]
                                      + [channel_hidden] * CHANNELS)
        for lin in self.channel_out:  # start from broad, centred distributions
            nn.init.zeros_(lin.weight)
            with torch.no_grad():
                lin.bias.zero_()
                lin.bias[2 * mixtures :] = 1.0
                lin.bias[mixtures : 2 * mixtures] = torch.linspace(-0.1, 0.1, mixtures)

    # ------------------------------------------------------------------ building blocks
    def _film(self, i: int, h: Tensor, tau_index: Tensor | None) -> Tensor:
        return self.film[i](h, tau_index) if self.num_taus else h

    def tap_weight(self) -> Tensor:
        """Context weight as ``[context_channels + 3, taps*3]`` in (tap, rgb) order (gathered steps)."""
        h = self.kernel // 2
        ii = torch.tensor([h + di for di, _ in self.taps], dtype=torch.long)
        jj = torch.tensor([h + dj for _, dj in self.taps], dtype=torch.long)
        w = self.context_weight[:, :, ii, jj]  # [out, 3, T]
        return w.permute(0, 2, 1).reshape(w.shape[0], -1)

    def context_full(self, r: Tensor) -> Tensor:
        """Context-layer pre-activations of whole patches: ``r`` ``[P, 3, S, S]`` -> ``[P, S, S, C+3]``."""
        if not self.taps:
            out = self.context_bias.view(1, 1, 1, -1)
            return out.expand(r.shape[0], r.shape[2], r.shape[3], -1)
        w = self.context_weight * self.mask
        out = F.conv2d(r / CONTEXT_SCALE, w, self.context_bias, padding=self.kernel // 2)
        return out.permute(0, 2, 3, 1)

    def context_gathered(self, taps: Tensor) -> Tensor:
        """Context-layer pre-activations from gathered tap values ``[..., taps*3]`` (raw residuals)."""
        if not self.taps:
            return self.context_bias.expand(*taps.shape[:-1], -1)
        return F.linear(taps / CONTEXT_SCALE, self.tap_weight(), self.context_bias)

    def trunk_features(self, pre: Tensor, features: Tensor | None, tau_index: Tensor | None,
                       record: dict[str, float] | None = None) -> Tensor:
        """Context pre-activations (and lossy features) -> trunk output ``[..., hidden]``.

        ``record`` (optional) collects the largest activation of each layer (integer calibration).
        """
        h = pre[..., : self.context_channels]
        if self.features_in is not None and features is not None:
            h = h + self.features_in(features)
        h = F.relu(self._film(0, h, tau_index))
        _record(record, "context", h)
        _record(record, "skip", pre[..., self.context_channels :].abs())
        for i, lin in enumerate(self.trunk):
            h = F.relu(self._film(i + 1, lin(h), tau_index))
            _record(record, f"trunk{i}", h)
        return h

    def channel_params(self, c: int, trunk: Tensor, pre: Tensor, current: Tensor,
                       tau_index: Tensor | None, record: dict[str, float] | None = None) -> MixtureParams:
        """Mixture of channel ``c``; ``current`` ``[..., 3]`` holds the pixel's decoded channels
        (raw residuals; only those before ``c`` are read)."""
        cur = current[..., :c] / CONTEXT_SCALE if self.channel_conditioning else current[..., :0]
        lin = self.channel_in[c]
        n = trunk.shape[-1]
        # trunk and current channels as two products, not one on a concatenation (a copy per step)
        z = F.linear(trunk, lin.weight[:, :n], lin.bias)
        for j in range(cur.shape[-1]):
            z = z + cur[..., j : j + 1] * lin.weight[:, n + j]
        z = F.relu(self._film(1 + len(self.trunk) + c, z, tau_index))
        _record(record, f"channel{c}", z)
        raw = self.channel_out[c](z)
        skip = pre[..., self.context_channels + c]
        if cur.shape[-1]:
            skip = skip + (cur * self.current_skip[c]).sum(-1)
        return MixtureParams.from_raw(raw, MEAN_SCALE * skip)


class ResidualNetwork(nn.Module):
    """Plain head + optional tau-conditioned head (bias correction), see the module docstring."""

    def __init__(
        self,
        feature_channels: int = 0,
        mask: str = "3p",
        mixtures: int = 3,
        context_channels: int = 64,
        hidden: int = 64,
        layers: int = 1,
        channel_hidden: int = 32,
        channel_conditioning: bool = True,
        bias_correction: bool = True,
        kernel: int = 7,
        gray_heads: bool = False,
    ) -> None:
        super().__init__()
        self.mask = mask
        self.mixtures = mixtures
        self.feature_channels = feature_channels
        args = (feature_channels, mask, mixtures, context_channels, hidden, layers, channel_hidden,
                channel_conditioning)
        self.head = ContextHead(*args, num_taus=0, kernel=kernel)
        self.tau_head = ContextHead(*args, num_taus=MAX_CONDITIONED_TAU, kernel=kernel) if bias_correction else None
        # a second pair of heads for grey images (their context is the grey plane in all three
        # channels, unlike any colour photo): trained on grey crops, see attach_gray_heads
        self.gray_head = ContextHead(*args, num_taus=0, kernel=kernel) if gray_heads else None
        self.gray_tau_head = (ContextHead(*args, num_taus=MAX_CONDITIONED_TAU, kernel=kernel)
                              if gray_heads and bias_correction else None)

    @property
    def kernel(self) -> int:
        return self.head.kernel

    @property
    def has_gray_heads(self) -> bool:
        return self.gray_head is not None

    def head_for(self, tau: int, gray: bool = False) -> tuple[ContextHead, int | None]:
        """The head that codes ``tau`` (of a grey image: the grey heads when the network has them)
        and its 0-based tau index (``None`` for a plain head)."""
        plain, conditioned = (self.gray_head, self.gray_tau_head) if gray and self.has_gray_heads else \
            (self.head, self.tau_head)
        if tau == 0 or conditioned is None:
            return plain, None
        return conditioned, min(int(tau), MAX_CONDITIONED_TAU) - 1


@torch.no_grad()
def attach_gray_heads(network: ResidualNetwork, gray: ResidualNetwork) -> None:
    """Give ``network`` (built with ``gray_heads=True``) grey heads from ``gray``, a network of the
    same topology (or a smaller one, grown to this one's sizes): its own grey heads where it has
    them (a shipped model whose colour heads are being replaced), else its heads (a network trained
    on grey crops)."""
    if not network.has_gray_heads:
        raise ValueError("the network has no grey heads (build it with gray_heads=True)")
    from nlic.residual.widen import widen_heads

    plain, conditioned = (gray.gray_head, gray.gray_tau_head) if gray.has_gray_heads else (gray.head, gray.tau_head)
    network.gray_head.load_state_dict(widen_heads(plain.state_dict(), network.gray_head.state_dict()))
    if network.gray_tau_head is not None:
        if conditioned is None:
            raise ValueError("the grey network has no bias-correction head to attach")
        network.gray_tau_head.load_state_dict(widen_heads(conditioned.state_dict(),
                                                          network.gray_tau_head.state_dict()))


@torch.no_grad()
def fit_linear_predictor(head: ContextHead, residuals: Tensor, ridge: float = 1e-3) -> None:
    """Set the linear mean prediction of ``head`` to the least-squares predictor of ``residuals``.

    ``residuals`` ``[B, 3, S, S]`` are training patches (raw residuals).  Each channel is predicted
    from the context taps and, with channel conditioning, the pixel's earlier channels; training
    then starts from a predictor at least as good as a classic LS one and refines it.
    """
    if not head.taps:
        return
    B, _, S, _ = residuals.shape
    h = head.kernel // 2
    x = F.pad(residuals.double() / CONTEXT_SCALE, (h, h, h, h))
    taps = torch.stack([x[:, :, h + di : h + di + S, h + dj : h + dj + S] for di, dj in head.taps], 1)
    taps = taps.permute(0, 3, 4, 1, 2).reshape(-1, len(head.taps) * CHANNELS)  # (tap, rgb) order
    target = residuals.double().permute(0, 2, 3, 1).reshape(-1, CHANNELS) / CONTEXT_SCALE
    weight = head.context_weight
    ii = torch.tensor([h + di for di, _ in head.taps])
    jj = torch.tensor([h + dj for _, dj in head.taps])
    C = head.context_channels
    for c in range(CHANNELS):
        n_cur = c if head.channel_conditioning else 0
        a = torch.cat([taps, target[:, :n_cur], torch.ones(len(taps), 1, dtype=taps.dtype)], 1)
        gram = a.T @ a + ridge * len(a) * torch.eye(a.shape[1], dtype=a.dtype)
        sol = torch.linalg.solve(gram, a.T @ target[:, c])
        tap_w = sol[: len(head.taps) * CHANNELS].view(len(head.taps), CHANNELS).T  # [3, T]
        weight[C + c] = 0.0
        weight[C + c][:, ii, jj] = tap_w.to(weight.dtype)
        head.context_bias[C + c] = float(sol[-1])
        if n_cur:
            head.current_skip[c].copy_(sol[len(head.taps) * CHANNELS : -1].to(weight.dtype))
