"""Coarse-to-fine hyperprior codec (Hu, Yang, Liu: "Coarse-to-Fine Hyper-Prior Modeling for
Learned Image Compression", AAAI 2020; "Learning End-to-End Lossy Image Compression: A
Benchmark", TPAMI 2021).

Three latent levels, each Gaussian, none spatially autoregressive, so every level decodes in one
parallel pass::

    x --g_a--> y (M ch, stride 16) --h_a1--> z1 (fine hyper, stride 32) --h_a2--> z2 (coarse, stride 64)
    z2 ~ N(0, sigma_c^2)          sigma_c: a learned per-channel parameter, broadcast spatially
    z1 ~ N(mu1, s1^2)             (mu1, s1) = p2(f2),  f2 = h_s2(z2_hat)   (stride 32)
    y  ~ N(mu,  s^2)              (mu,  s)  = p1(f1),  f1 = h_s1(z1_hat)   (stride 16)
    x_hat, u = aggregation decoder(y_hat, f1, f2)

Choices taken from the authors' reference code (huzi96/Coarse2Fine-PyTorch) where the paper is
terse, and the ones left open:

- Hyper transforms are "signal preserving": resolution changes by space-to-depth /
  depth-to-space plus 1x1 convolutions instead of strided 5x5 convolutions.  Hidden widths
  follow one rule of ours: 2x the level's latent channels (the reference uses ad hoc widths).
- The prediction networks (hyper features -> mean, scale) are two 3x3 convolutions (5x5
  receptive field, as the reference's 5x5 neighbourhood sampler) and a 1x1 output layer.
- Information aggregation: f2 is brought to stride 16 by depth-to-space and concatenated with
  f1 (the hyper decodings at the stride of y), upsampled to stride 2 by three transposed
  convolutions, concatenated with the main synthesis features of y_hat at stride 2 (three
  deconv + IGDN layers), fused by a residual 3-conv block and decoded to full resolution — the
  reference's placement.  The reference narrows to N/3 and N/12 channels before its 3-channel
  output; here the last layers keep N channels because the head also emits ``u``.
- The coarse level uses CompressAI's ``GaussianConditional`` with zero mean and the learned
  per-channel scale (one shared ``GaussianConditional`` serves all levels: it has no learned
  state), so the model has no ``EntropyBottleneck`` and :meth:`aux_loss` is a zero tensor.
- Training quantization is CompressAI's additive uniform noise at every level, for the rates
  and for the values passed on (the reference uses noise for the rates, straight-through
  rounding for the values passed on, and trains in stages, adding the coarse level later).

Widths: small defaults for CPU (N=64, M=96, fine 64, coarse 32); paper (low rate) N=M=192,
fine 256, coarse 128; paper (high rate) N=M=384.
"""

from __future__ import annotations

import torch
from compressai.entropy_models import GaussianConditional
from compressai.layers import GDN, conv1x1, conv3x3
from compressai.models.utils import deconv
from torch import Tensor, nn

from nlic.codecs._layers import analysis_transform
from nlic.codecs.base import LatentPayload
from nlic.codecs.blocks import depth_to_space_conv, space_to_depth_conv
from nlic.codecs.compressai_base import CompressAICodec


def hyper_analysis(in_ch: int, hidden: int, out_ch: int) -> nn.Sequential:
    """Signal-preserving hyper analysis (stride 2): 3x3 conv, space-to-depth, 1x1 convs."""
    return nn.Sequential(
        conv3x3(in_ch, in_ch),
        space_to_depth_conv(in_ch, hidden), nn.ReLU(inplace=True),
        conv1x1(hidden, hidden), nn.ReLU(inplace=True),
        conv1x1(hidden, out_ch),
    )


def hyper_synthesis(in_ch: int, hidden: int, out_ch: int) -> nn.Sequential:
    """Signal-preserving hyper synthesis (x2): 1x1 convs, depth-to-space, 3x3 conv -> features."""
    return nn.Sequential(
        conv1x1(in_ch, hidden), nn.ReLU(inplace=True),
        conv1x1(hidden, hidden), nn.ReLU(inplace=True),
        depth_to_space_conv(hidden, out_ch),
        conv3x3(out_ch, out_ch),
    )


def prediction_network(feat_ch: int, latent_ch: int) -> nn.Sequential:
    """Hyper features -> ``cat(scales, means)`` of the next finer latent (no autoregression)."""
    return nn.Sequential(
        conv3x3(feat_ch, feat_ch), nn.LeakyReLU(0.2, inplace=True),
        conv3x3(feat_ch, feat_ch), nn.LeakyReLU(0.2, inplace=True),
        conv1x1(feat_ch, 2 * latent_ch),
    )


class AggregationDecoder(nn.Module):
    """Information-aggregation reconstruction: ``(y_hat, f1, f2) -> cat(x_hat, u)``.

    Args:
        M: channels of ``y_hat`` and of ``f1`` (stride 16).
        N: channels of the synthesis.
        f2_ch: channels of ``f2`` (stride 32, multiple of 4).
        out_ch: ``3 + feature_channels``.
    """

    def __init__(self, M: int, N: int, f2_ch: int, out_ch: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True),
        )
        self.f2_up = nn.PixelShuffle(2)
        self.side = nn.Sequential(
            deconv(M + f2_ch // 4, N),
            deconv(N, N), nn.LeakyReLU(0.2, inplace=True),
            deconv(N, N), nn.LeakyReLU(0.2, inplace=True),
        )
        self.fuse = nn.Sequential(
            conv3x3(2 * N, N), nn.LeakyReLU(0.2, inplace=True),
            conv3x3(N, N), nn.LeakyReLU(0.2, inplace=True),
            conv3x3(N, 2 * N), nn.LeakyReLU(0.2, inplace=True),
        )
        self.out = nn.Sequential(
            deconv(2 * N, N),
            conv3x3(N, N), nn.LeakyReLU(0.2, inplace=True),
            conv1x1(N, out_ch),
        )

    def forward(self, y_hat: Tensor, f1: Tensor, f2: Tensor) -> Tensor:
        side = self.side(torch.cat([f1, self.f2_up(f2)], dim=1))
        h = torch.cat([self.main(y_hat), side], dim=1)
        return self.out(h + self.fuse(h))


class CoarseToFineHyperprior(CompressAICodec):
    """Coarse-to-fine hyperprior codec with an information-aggregation decoder.

    Args:
        N: channels of the analysis / synthesis transforms.
        M: channels of ``y`` (stride 16).
        fine_channels: channels of the fine hyper latent ``z1`` (stride 32); multiple of 4.
        coarse_channels: channels of the coarse hyper latent ``z2`` (stride 64).
        feature_channels: channels of the feature map ``u`` handed to the residual coder.
        init_coarse_scale: initial value of the learned per-channel sigma of ``z2``.
    """

    pad_multiple = 64

    def __init__(self, N: int = 64, M: int = 96, fine_channels: int = 64, coarse_channels: int = 32,
                 feature_channels: int = 32, init_coarse_scale: float = 1.0) -> None:
        super().__init__(feature_channels=feature_channels)
        if fine_channels % 4:
            raise ValueError(f"fine_channels={fine_channels} must be a multiple of 4")
        self.N, self.M = N, M
        self.fine_channels, self.coarse_channels = fine_channels, coarse_channels
        self.g_a = analysis_transform(3, N, M)
        self.h_a1 = hyper_analysis(M, 2 * fine_channels, fine_channels)
        self.h_a2 = hyper_analysis(fine_channels, 2 * coarse_channels, coarse_channels)
        self.h_s2 = hyper_synthesis(coarse_channels, 2 * coarse_channels, fine_channels)
        self.p2 = prediction_network(fine_channels, fine_channels)
        self.h_s1 = hyper_synthesis(fine_channels, 2 * fine_channels, M)
        self.p1 = prediction_network(M, M)
        self.g_s = AggregationDecoder(M, N, fine_channels, 3 + feature_channels)
        self.z2_log_scale = nn.Parameter(
            torch.full((coarse_channels,), float(init_coarse_scale)).log())
        self.gaussian_conditional = GaussianConditional(None)

    # -- helpers ---------------------------------------------------------------------------
    def coarse_scales(self) -> Tensor:
        """Learned per-channel sigma of ``z2``, shaped ``1 x C2 x 1 x 1``."""
        return self.z2_log_scale.exp().view(1, -1, 1, 1)

    def aux_loss(self) -> Tensor:
        """No ``EntropyBottleneck`` here: a zero tensor (keeps ``loss + aux_loss()`` a tensor)."""
        return self.z2_log_scale.new_zeros(())

    def _synthesize(self, y_hat: Tensor, f1: Tensor, f2: Tensor) -> dict:
        x_hat, features = self.split_synthesis(self.g_s(y_hat, f1, f2))
        return {"x_hat": x_hat, "features": features}

    # -- training ----------------------------------------------------------------------------
    def forward(self, x: Tensor) -> dict:
        gc = self.gaussian_conditional
        y = self.g_a(x)
        z1 = self.h_a1(y)
        z2 = self.h_a2(z1)
        z2_hat, z2_likelihoods = gc(z2, self.coarse_scales())
        f2 = self.h_s2(z2_hat)
        scales1, means1 = self.p2(f2).chunk(2, 1)
        z1_hat, z1_likelihoods = gc(z1, scales1, means=means1)
        f1 = self.h_s1(z1_hat)
        scales, means = self.p1(f1).chunk(2, 1)
        y_hat, y_likelihoods = gc(y, scales, means=means)
        out = self._synthesize(y_hat, f1, f2)
        out["likelihoods"] = {"y": y_likelihoods, "z1": z1_likelihoods, "z2": z2_likelihoods}
        return out

    # -- coding ------------------------------------------------------------------------------
    def _encode(self, x: Tensor) -> tuple[LatentPayload, dict]:
        gc = self.gaussian_conditional
        y = self.g_a(x)
        z1 = self.h_a1(y)
        z2 = self.h_a2(z1)
        idx2 = gc.build_indexes(self.coarse_scales().expand_as(z2))
        s2 = gc.compress(z2, idx2)
        z2_hat = gc.quantize(z2, "dequantize")  # == what the decoder gets from s2
        f2 = self.h_s2(z2_hat)
        scales1, means1 = self.p2(f2).chunk(2, 1)
        idx1 = gc.build_indexes(scales1)
        s1 = gc.compress(z1, idx1, means=means1)
        z1_hat = gc.quantize(z1, "dequantize", means1)
        f1 = self.h_s1(z1_hat)
        scales, means = self.p1(f1).chunk(2, 1)
        s_y = gc.compress(y, gc.build_indexes(scales), means=means)
        y_hat = gc.quantize(y, "dequantize", means)
        payload = LatentPayload([s_y[0], s1[0], s2[0]], list(z2.shape[-2:]))
        return payload, {"y": y_hat, "z1": z1_hat, "z2": z2_hat, "f1": f1, "f2": f2}

    def _decode(self, payload: LatentPayload) -> dict:
        gc = self.gaussian_conditional
        s_y, s1, s2 = payload.strings
        h, w = payload.shape
        scales2 = self.coarse_scales().expand(1, self.coarse_channels, h, w)
        z2_hat = gc.decompress([s2], gc.build_indexes(scales2))
        f2 = self.h_s2(z2_hat)
        scales1, means1 = self.p2(f2).chunk(2, 1)
        z1_hat = gc.decompress([s1], gc.build_indexes(scales1), means=means1)
        f1 = self.h_s1(z1_hat)
        scales, means = self.p1(f1).chunk(2, 1)
        y_hat = gc.decompress([s_y], gc.build_indexes(scales), means=means)
        return {"y": y_hat, "z1": z1_hat, "z2": z2_hat, "f1": f1, "f2": f2}

    @torch.no_grad()
    def quantize_latents(self, x: Tensor) -> dict[str, Tensor]:
        """Encoder-side quantized latents ``{"y", "z1", "z2"}`` (what the decoder must recover)."""
        latents = self._encode(x)[1]
        return {k: latents[k] for k in ("y", "z1", "z2")}

    @torch.no_grad()
    def decode_latents(self, payload: LatentPayload) -> dict[str, Tensor]:
        """Decoder-side quantized latents ``{"y", "z1", "z2"}`` from a payload."""
        latents = self._decode(payload)
        return {k: latents[k] for k in ("y", "z1", "z2")}

    def compress_latents(self, x: Tensor) -> LatentPayload:
        """Code ``x`` (batch 1): strings ``[y, z1, z2]``, shape ``[h, w]`` of ``z2``."""
        return self._encode(x)[0]

    def decompress_latents(self, payload: LatentPayload) -> dict:
        """Decode all three levels (each in one parallel pass) and reconstruct."""
        lat = self._decode(payload)
        return self._synthesize(lat["y"], lat["f1"], lat["f2"])


__all__ = ["AggregationDecoder", "CoarseToFineHyperprior", "hyper_analysis", "hyper_synthesis",
           "prediction_network"]
