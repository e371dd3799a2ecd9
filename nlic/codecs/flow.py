"""Normalizing-flow lossy codec ("Lossy Image Compression with Normalizing Flows", 2020).

A bijective multi-scale flow maps the image to a latent with exactly as many elements as the image
(4 levels: 3 -> 12 -> 48 -> 192 -> 768 channels at stride 16, no factor-out).  The latent is
quantized on a FIXED lattice of step ``delta`` (``y_q = delta * round(y / delta)``) and the
integers ``y_q / delta`` are entropy-coded with a mean-scale hyperprior conditioned on ``log delta``.
The decoder is the inverse flow; a small convolutional head on the reconstruction (plus
``log delta``) gives the feature map ``u`` for the residual coder.

Because nothing is discarded before quantization, a small ``delta`` reaches near-lossless quality,
and because the lattice does not depend on the hyperprior, re-encoding a decoded image maps back
onto (almost) the same lattice point, so quality stays constant over generations.

Design choices (see ``docs/flow.md``):

* Per level: squeeze 2x2 -> ``steps`` x (actnorm -> invertible 1x1 conv -> affine coupling).
  The 1x1 conv is inverted in float64; coupling scales are ``exp(b * tanh(s / b))`` (bounded in
  ``[e^-b, e^b]``, identity at init); actnorm log-scales are tanh-bounded as well.
* The hyperprior predicts mean and std of ``y`` in latent units; dividing by ``delta`` gives them
  in units of quantization bins, so one network covers every ``delta``.  Its analysis and
  synthesis also see a constant ``log delta`` channel so the side information adapts to the rate.
* Coding on a fixed lattice with a continuous mean: the symbol is ``q - round(mu)`` and the CDF
  table is indexed by (scale, bucket of the fractional mean ``mu - round(mu)``), see
  :class:`LatticeGaussianConditional`.
* ``delta`` is carried in the payload: ``LatentPayload.shape = [z_h, z_w, delta_bits]`` where
  ``delta_bits`` is the IEEE-754 float32 bit pattern of delta as a non-negative int32.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from nlic.codecs.base import LatentPayload
from nlic.codecs.compressai_base import CompressAICodec

# --------------------------------------------------------------------------------------------
# flow layers
# --------------------------------------------------------------------------------------------


class ActNorm(nn.Module):
    """Per-channel affine map ``(x + b) * exp(s)``, identity at init, ``|s| <= bound``."""

    def __init__(self, channels: int, bound: float = 2.0) -> None:
        super().__init__()
        self.bound = bound
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def _log_scale(self) -> Tensor:
        return self.bound * torch.tanh(self.logs / self.bound)

    def forward(self, x: Tensor) -> Tensor:
        return (x + self.bias) * torch.exp(self._log_scale())

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self._log_scale()) - self.bias


class InvConv1x1(nn.Module):
    """Glow's invertible 1x1 convolution; random orthogonal init, inverse computed in float64."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))[0]
        self.weight = nn.Parameter(w.float())

    def forward(self, x: Tensor) -> Tensor:
        c = self.weight.shape[0]
        return F.conv2d(x, self.weight.view(c, c, 1, 1))

    def inverse_weight(self) -> Tensor:
        return torch.linalg.inv(self.weight.double()).to(self.weight.dtype)

    def inverse(self, y: Tensor) -> Tensor:
        c = self.weight.shape[0]
        return F.conv2d(y, self.inverse_weight().view(c, c, 1, 1))


class AffineCoupling(nn.Module):
    """``x_b -> x_b * exp(b * tanh(s(x_a) / b)) + t(x_a)``; zero-initialised last layer (identity)."""

    def __init__(self, channels: int, hidden: int, log_scale_bound: float = 1.0) -> None:
        super().__init__()
        self.ca = channels // 2
        self.cb = channels - self.ca
        self.bound = log_scale_bound
        self.net = nn.Sequential(
            nn.Conv2d(self.ca, hidden, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(hidden, hidden, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(hidden, 2 * self.cb, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _scale_shift(self, xa: Tensor) -> tuple[Tensor, Tensor]:
        raw_s, t = self.net(xa).chunk(2, dim=1)
        return self.bound * torch.tanh(raw_s / self.bound), t

    def forward(self, x: Tensor) -> Tensor:
        xa, xb = x[:, : self.ca], x[:, self.ca :]
        log_s, t = self._scale_shift(xa)
        return torch.cat([xa, xb * torch.exp(log_s) + t], dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        ya, yb = y[:, : self.ca], y[:, self.ca :]
        log_s, t = self._scale_shift(ya)
        return torch.cat([ya, (yb - t) * torch.exp(-log_s)], dim=1)


class FlowStep(nn.Module):
    """actnorm (optional) -> invertible 1x1 conv -> affine coupling."""

    def __init__(self, channels: int, hidden: int, log_scale_bound: float, actnorm: bool) -> None:
        super().__init__()
        self.actnorm = ActNorm(channels) if actnorm else None
        self.invconv = InvConv1x1(channels)
        self.coupling = AffineCoupling(channels, hidden, log_scale_bound)

    def forward(self, x: Tensor) -> Tensor:
        if self.actnorm is not None:
            x = self.actnorm(x)
        return self.coupling(self.invconv(x))

    def inverse(self, y: Tensor) -> Tensor:
        x = self.invconv.inverse(self.coupling.inverse(y))
        if self.actnorm is not None:
            x = self.actnorm.inverse(x)
        return x


class MultiScaleFlow(nn.Module):
    """``levels`` x (squeeze 2x2 -> ``steps[l]`` flow steps); no factor-out (latent = image size).

    Args:
        in_channels: image channels (3).
        levels: number of squeeze levels; the latent has ``in_channels * 4**levels`` channels at
            stride ``2**levels``.
        steps_per_level: flow steps after each squeeze.
        hidden_channels: width of the coupling networks per level.
        log_scale_bound: coupling log-scales lie in ``[-bound, bound]``.
        actnorm: include an actnorm layer in each step.
    """

    def __init__(
        self,
        in_channels: int = 3,
        levels: int = 4,
        steps_per_level: Sequence[int] = (2, 2, 2, 2),
        hidden_channels: Sequence[int] = (32, 64, 128, 128),
        log_scale_bound: float = 1.0,
        actnorm: bool = True,
    ) -> None:
        super().__init__()
        steps_per_level, hidden_channels = list(steps_per_level), list(hidden_channels)
        if len(steps_per_level) != levels or len(hidden_channels) != levels:
            raise ValueError("steps_per_level and hidden_channels need one entry per level")
        self.levels = levels
        self.out_channels = in_channels * 4**levels
        self.stride = 2**levels
        self.blocks = nn.ModuleList()
        c = in_channels
        for lvl in range(levels):
            c *= 4
            self.blocks.append(nn.ModuleList(
                FlowStep(c, hidden_channels[lvl], log_scale_bound, actnorm)
                for _ in range(steps_per_level[lvl])
            ))

    def forward(self, x: Tensor) -> Tensor:
        for steps in self.blocks:
            x = F.pixel_unshuffle(x, 2)
            for step in steps:
                x = step(x)
        return x

    def inverse(self, y: Tensor) -> Tensor:
        for steps in reversed(self.blocks):
            for step in reversed(steps):
                y = step.inverse(y)
            y = F.pixel_shuffle(y, 2)
        return y


# --------------------------------------------------------------------------------------------
# entropy model on a fixed lattice
# --------------------------------------------------------------------------------------------


class LatticeGaussianConditional(GaussianConditional):
    """Gaussian conditional coding INTEGER symbols ``q`` with a continuous mean ``mu``.

    CompressAI's ``GaussianConditional`` quantizes ``y - mu`` (the lattice moves with the mean).
    Here the lattice is fixed (``q`` is already an integer) and the mean's fractional part
    ``f = mu - round(mu)`` selects one of ``mean_offsets`` shifted CDF tables: the coded symbol is
    ``q - round(mu)`` and its table is the discretised ``N(f_bucket, scale)``.  Table index =
    ``scale_index * mean_offsets + offset_index``.
    """

    def __init__(self, scale_table=None, mean_offsets: int = 4, **kwargs) -> None:
        super().__init__(scale_table, **kwargs)
        self.mean_offsets = int(mean_offsets)

    def offset_centres(self) -> Tensor:
        n = self.mean_offsets
        return (torch.arange(n, dtype=torch.float64) + 0.5) / n - 0.5

    def update(self) -> None:
        multiplier = -self._standardized_quantile(self.tail_mass / 2)
        pmf_center = torch.ceil(self.scale_table * multiplier).int()
        pmf_length = 2 * pmf_center + 1
        max_length = int(torch.max(pmf_length).item())
        device = pmf_center.device
        samples = (torch.arange(max_length, device=device) - pmf_center[:, None]).double()  # S x L
        scales = self.scale_table.double()[:, None, None]  # S x 1 x 1
        offsets = self.offset_centres().to(device)[None, :, None]  # 1 x O x 1
        centred = samples[:, None, :] - offsets  # S x O x L
        upper = self._standardized_cumulative((centred + 0.5) / scales)
        lower = self._standardized_cumulative((centred - 0.5) / scales)
        pmf = (upper - lower).float()
        n_s, n_o = len(pmf_length), self.mean_offsets
        last = (pmf_length - 1).long().view(n_s, 1, 1).expand(n_s, n_o, 1)
        tail_mass = (lower[..., :1] + 1.0 - upper.gather(2, last.to(device))).float()
        pmf = pmf.reshape(n_s * n_o, max_length)
        tail_mass = tail_mass.reshape(n_s * n_o, 1)
        lengths = pmf_length.repeat_interleave(n_o)
        self._quantized_cdf = self._pmf_to_cdf(pmf, tail_mass, lengths, max_length)
        self._offset = -pmf_center.repeat_interleave(n_o)
        self._cdf_length = lengths + 2

    def build_lattice_indexes(self, scales: Tensor, means: Tensor) -> tuple[Tensor, Tensor]:
        """(table indexes, integer part of the means) for symbols ``q - round(means)``."""
        means_int = torch.round(means)
        frac = means - means_int
        off = torch.floor((frac + 0.5) * self.mean_offsets).clamp_(0, self.mean_offsets - 1).int()
        return self.build_indexes(scales) * self.mean_offsets + off, means_int

    def likelihood(self, q: Tensor, scales: Tensor, means: Tensor) -> Tensor:
        """Probability mass of the unit bin around ``q`` (training: ``q`` carries uniform noise)."""
        lik = self._likelihood(q, scales, means)
        if self.use_likelihood_bound:
            lik = self.likelihood_lower_bound(lik)
        return lik


# --------------------------------------------------------------------------------------------
# the codec
# --------------------------------------------------------------------------------------------


def _ste_round(x: Tensor) -> Tensor:
    return x + (torch.round(x) - x).detach()


def delta_to_bits(delta: float) -> int:
    """IEEE-754 float32 bit pattern of ``delta`` as a non-negative int (payload encoding)."""
    if not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be a positive finite number, got {delta!r}")
    return struct.unpack("<i", struct.pack("<f", delta))[0]


def bits_to_delta(bits: int) -> float:
    """Inverse of :func:`delta_to_bits` (exactly the float32 value the encoder used)."""
    delta = struct.unpack("<f", struct.pack("<i", int(bits)))[0]
    if not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"payload carries an invalid delta code {bits}")
    return delta


#: distortion weight of delta-sampled training: 3 elements per pixel x 6 / ln 2 (uniform quantizer slope)
FLOW_KAPPA = 18.0 / math.log(2.0)


class FlowCodec(CompressAICodec):
    """Normalizing-flow codec with a fixed-lattice quantizer and a delta-conditioned hyperprior.

    Args:
        levels: squeeze levels of the flow (4: stride 16, 768 latent channels).
        steps_per_level: flow steps per level.
        hidden_channels: coupling-network width per level.
        hyper_channels: channels ``N`` of the hyperprior (``z`` has ``N`` channels at stride 64).
        feature_channels: channels of the feature map ``u`` for the residual coder.
        feature_hidden: width of the feature head.
        delta: quantization step used at inference (``self.delta`` may be changed at any time).
        delta_min, delta_max: range of the log-uniform delta distribution used in training.
        log_scale_bound: bound of the coupling log-scales.
        actnorm: use actnorm in every flow step.
        mean_offsets: number of fractional-mean buckets of the CDF tables.
    """

    def __init__(
        self,
        levels: int = 4,
        steps_per_level: Sequence[int] = (2, 2, 2, 2),
        hidden_channels: Sequence[int] = (32, 64, 128, 128),
        hyper_channels: int = 128,
        feature_channels: int = 32,
        feature_hidden: int = 64,
        delta: float = 0.03,
        delta_min: float = 0.002,
        delta_max: float = 0.3,
        log_scale_bound: float = 1.0,
        actnorm: bool = True,
        mean_offsets: int = 4,
    ) -> None:
        super().__init__(feature_channels=feature_channels)
        if not 0 < delta_min <= delta_max:
            raise ValueError("need 0 < delta_min <= delta_max")
        self.flow = MultiScaleFlow(3, levels, steps_per_level, hidden_channels, log_scale_bound, actnorm)
        self.latent_channels = M = self.flow.out_channels
        self.pad_multiple = self.flow.stride * 4
        self.delta = float(delta)
        self.delta_min, self.delta_max = float(delta_min), float(delta_max)
        N = hyper_channels
        self.h_a = nn.Sequential(
            conv(M + 1, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True),
            conv(N, N), nn.LeakyReLU(inplace=True), conv(N, N),
        )
        self.h_s = nn.Sequential(
            deconv(N + 1, N), nn.LeakyReLU(inplace=True),
            deconv(N, N * 3 // 2), nn.LeakyReLU(inplace=True),
            conv(N * 3 // 2, 2 * M, stride=1, kernel_size=1),
        )
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = LatticeGaussianConditional(None, mean_offsets=mean_offsets)
        self.feature_head = nn.Sequential(
            nn.Conv2d(4, feature_hidden, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(feature_hidden, feature_hidden, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(feature_hidden, feature_channels, 1),
        )

    # -- helpers ---------------------------------------------------------------------------------

    def _delta_tensor(self, batch: int, delta: float | Tensor | None, device: torch.device) -> Tensor:
        """Per-sample delta as ``B x 1 x 1 x 1`` float32 (log-uniform samples in training)."""
        if delta is None and self.training:
            lo, hi = math.log(self.delta_min), math.log(self.delta_max)
            return torch.exp(torch.empty(batch, 1, 1, 1, device=device).uniform_(lo, hi))
        if delta is None:
            delta = self.delta
        if isinstance(delta, Tensor):
            return delta.to(device=device, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(batch, 1, 1, 1)
        return torch.full((batch, 1, 1, 1), float(delta), device=device, dtype=torch.float32)

    def _condition(self, delta: Tensor) -> Tensor:
        """log delta mapped to about [-1, 1] over the training range."""
        lo, hi = math.log(self.delta_min), math.log(self.delta_max)
        half = max((hi - lo) / 2, 1e-6)
        return (torch.log(delta) - (lo + hi) / 2) / half

    @staticmethod
    def _with_cond(x: Tensor, cond: Tensor) -> Tensor:
        return torch.cat([x, cond.expand(-1, 1, *x.shape[-2:])], dim=1)

    def _hyper_decode(self, z_hat: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std of ``y / delta`` (in quantization bins) given ``z_hat``."""
        mu, log_sigma = self.h_s(self._with_cond(z_hat, self._condition(delta))).chunk(2, 1)
        sigma = torch.exp(log_sigma.clamp(-12.0, 6.0))
        return mu / delta, sigma / delta

    def _synthesize(self, q: Tensor, delta: Tensor) -> dict:
        """Inverse flow of ``delta * q`` and the feature head: the decoder, exactly."""
        x_hat = self.flow.inverse(q * delta) + 0.5
        features = self.feature_head(self._with_cond(x_hat, self._condition(delta)))
        return {"x_hat": x_hat, "features": features}

    def analysis(self, x: Tensor) -> Tensor:
        """The (unquantized) latent ``y`` of an image in [0, 1]."""
        return self.flow(x - 0.5)

    def synthesis(self, y: Tensor) -> Tensor:
        """Inverse of :meth:`analysis` (no quantization)."""
        return self.flow.inverse(y) + 0.5

    # -- training / estimation -------------------------------------------------------------------

    def forward(self, x: Tensor, delta: float | Tensor | None = None) -> dict:
        """Training (noise for the rate, straight-through rounding for the reconstruction) or,
        in eval mode, the exact encoder reconstruction at ``delta`` (default ``self.delta``).

        Returns ``x_hat``, ``features``, ``likelihoods`` ({"y", "z"}) and ``delta`` (B x 1 x 1 x 1).
        """
        d = self._delta_tensor(x.shape[0], delta, x.device)
        y = self.analysis(x)
        z = self.h_a(self._with_cond(y, self._condition(d)))
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        means, scales = self._hyper_decode(z_hat, d)
        v = y / d
        if self.training:
            q = _ste_round(v)
            v_rate = v + torch.empty_like(v).uniform_(-0.5, 0.5)
        else:
            q = v_rate = torch.round(v)
        y_likelihoods = self.gaussian_conditional.likelihood(v_rate, scales, means)
        out = self._synthesize(q, d)
        out["likelihoods"] = {"y": y_likelihoods, "z": z_likelihoods}
        out["delta"] = d
        return out

    def rd_loss(self, bpp: Tensor, mse: Tensor, out: dict, lmbda: float) -> Tensor:
        """:func:`delta_weighted_loss`: the sampled delta, not ``lmbda``, sets each sample's
        operating point, so one model covers every rate."""
        return delta_weighted_loss(bpp, mse, out["delta"])

    # -- real coding -----------------------------------------------------------------------------

    def compress_latents(self, x: Tensor) -> LatentPayload:
        if x.shape[0] != 1:
            raise ValueError("compress_latents codes one image at a time (batch 1)")
        bits = delta_to_bits(self.delta)
        d = self._delta_tensor(1, bits_to_delta(bits), x.device)
        y = self.analysis(x)
        q = torch.round(y / d)
        z = self.h_a(self._with_cond(y, self._condition(d)))
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        means, scales = self._hyper_decode(z_hat, d)
        indexes, means_int = self.gaussian_conditional.build_lattice_indexes(scales, means)
        y_strings = self.gaussian_conditional.compress(q, indexes, means=means_int)
        return LatentPayload([y_strings[0], z_strings[0]], [int(z.shape[-2]), int(z.shape[-1]), bits])

    def decompress_latents(self, payload: LatentPayload) -> dict:
        if len(payload.strings) != 2 or len(payload.shape) != 3:
            raise ValueError("not a flow-codec payload (expected 2 strings and [z_h, z_w, delta_bits])")
        y_string, z_string = payload.strings
        z_h, z_w, bits = payload.shape
        d = self._delta_tensor(1, bits_to_delta(bits), self.h_s[0].weight.device)
        z_hat = self.entropy_bottleneck.decompress([z_string], (z_h, z_w))
        means, scales = self._hyper_decode(z_hat, d)
        indexes, means_int = self.gaussian_conditional.build_lattice_indexes(scales, means)
        q = self.gaussian_conditional.decompress([y_string], indexes, means=means_int)
        return self._synthesize(q, d)


def delta_weighted_loss(bpp: Tensor, mse: Tensor, delta: Tensor, kappa: float = FLOW_KAPPA) -> Tensor:
    """``bpp + kappa * mean(mse / delta^2)`` for per-sample ``mse`` ([0, 1] scale) and steps ``delta``.

    Weighting the distortion by ``1 / delta^2`` makes each sample's trade-off match the slope of a
    uniform quantizer of step ``delta`` (``18 / ln 2`` = 3 elements per pixel times ``6 / ln 2``),
    so ``delta`` alone sets the operating point.
    """
    return bpp + kappa * (mse / delta.reshape(-1) ** 2).mean()


__all__ = [
    "ActNorm", "AffineCoupling", "FlowCodec", "FlowStep", "InvConv1x1", "LatticeGaussianConditional",
    "MultiScaleFlow", "bits_to_delta", "delta_to_bits", "delta_weighted_loss",
]
