"""The lossy codec of DLPR (Bai et al., "Learning Scalable l-infinity-constrained Near-lossless
Image Compression via Joint Lossy Image and Residual Compression", CVPR 2021; "Deep Lossy Plus
Residual Coding for Lossless and Near-lossless Image Compression", TPAMI 2024).

Window-attention analysis / synthesis transforms, a mean-scale hyperprior without latent context
model, and an extra feature head that emits the full-resolution feature map ``u`` (256 channels
in the paper) next to the lossy image::

    g_a: [RB-stride, RB] x2 -> WA(ws) @ stride 4 -> RB-stride, RB -> conv s2 -> WA(ws/2) @ 16
    g_s: WA(ws/2) @ 16 -> [RB, RB-up] x2 -> WA(ws) @ stride 4 -> RB, RB-up -> heads (subpel x2)
    hyper: 1x1 convs with space-to-depth / depth-to-space (stride 4 -> z at stride 64),
           separate mean and scale branches; z coded by an ``EntropyBottleneck``

The block layout, window sizes (8 at stride 4, 4 at stride 16), the 1x1 hyper coder and the
separate mean / scale hyper decoders follow the authors' code (BYchao100/Deep-Lossy-Plus-Residual-
Coding).  Choices of ours where the paper is silent or we depart from that code:

- Residual (down/up-sampling) blocks are CompressAI's ``ResidualBlockWithStride``,
  ``ResidualBlock`` and ``ResidualBlockUpsample`` (the reference's blocks differ in the skip
  kernel and in where the residual block sits).
- A window-attention stage is two Swin blocks (regular, then shifted windows), each window
  self-attention + residual MLP (:class:`nlic.codecs.blocks.WindowAttentionBlock`); the reference
  wraps its window attention in the gated residual module of Zou et al. (CVPR 2022) instead.
- Windows work for any map size (padding with masked keys inside the block).
- Hyper latent ``z`` has ``M`` channels and all hyper layers are ``M`` wide (reference: N=M=192).

Widths: small defaults for CPU (N=64, M=96, 4 heads); paper N=M=192, feature_channels=256,
8 heads.
"""

from __future__ import annotations

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import (
    ResidualBlock,
    ResidualBlockUpsample,
    ResidualBlockWithStride,
    conv1x1,
    conv3x3,
    subpel_conv3x3,
)
from torch import Tensor, nn

from nlic.codecs.base import LatentPayload
from nlic.codecs.blocks import depth_to_space_conv, space_to_depth_conv, window_attention_stage
from nlic.codecs.compressai_base import CompressAICodec


def dlpr_analysis(N: int, M: int, num_heads: int, window_size: int, latent_window_size: int,
                  mlp_ratio: float) -> nn.Sequential:
    """Image -> ``y`` (``M`` channels, stride 16) with window attention at strides 4 and 16."""
    return nn.Sequential(
        ResidualBlockWithStride(3, N), ResidualBlock(N, N),
        ResidualBlockWithStride(N, N), ResidualBlock(N, N),
        window_attention_stage(N, num_heads, window_size, mlp_ratio),
        ResidualBlockWithStride(N, N), ResidualBlock(N, N),
        conv3x3(N, M, stride=2),
        window_attention_stage(M, num_heads, latent_window_size, mlp_ratio),
    )


def dlpr_synthesis_trunk(N: int, M: int, num_heads: int, window_size: int, latent_window_size: int,
                         mlp_ratio: float) -> nn.Sequential:
    """``y_hat`` -> ``N`` channels at stride 2 (the heads do the last x2)."""
    return nn.Sequential(
        window_attention_stage(M, num_heads, latent_window_size, mlp_ratio),
        ResidualBlock(M, N), ResidualBlockUpsample(N, N),
        ResidualBlock(N, N), ResidualBlockUpsample(N, N),
        window_attention_stage(N, num_heads, window_size, mlp_ratio),
        ResidualBlock(N, N), ResidualBlockUpsample(N, N),
    )


def _hyper_synthesis_branch(M: int) -> nn.Sequential:
    return nn.Sequential(
        conv1x1(M, M), nn.LeakyReLU(inplace=True),
        conv1x1(M, M), nn.LeakyReLU(inplace=True),
        depth_to_space_conv(M, M), nn.LeakyReLU(inplace=True),
        depth_to_space_conv(M, M), nn.LeakyReLU(inplace=True),
        conv1x1(M, M),
    )


class DLPRLossyCodec(CompressAICodec):
    """DLPR's lossy layer: window-attention transforms, mean-scale hyperprior, feature head ``u``.

    Args:
        N: channels of the analysis / synthesis transforms.
        M: channels of ``y`` and of the hyper coder (and of ``z``).
        feature_channels: channels of ``u`` handed to the residual coder (256 in the paper).
        num_heads: attention heads (must divide ``N`` and ``M``).
        window_size: attention window at stride 4 (8 in the paper).
        latent_window_size: attention window at stride 16 (4 in the paper).
        mlp_ratio: hidden width of the attention blocks' MLP relative to the channels.
    """

    pad_multiple = 64

    def __init__(self, N: int = 64, M: int = 96, feature_channels: int = 32, num_heads: int = 4,
                 window_size: int = 8, latent_window_size: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__(feature_channels=feature_channels)
        self.N, self.M = N, M
        self.g_a = dlpr_analysis(N, M, num_heads, window_size, latent_window_size, mlp_ratio)
        self.g_s = dlpr_synthesis_trunk(N, M, num_heads, window_size, latent_window_size, mlp_ratio)
        self.rec_head = subpel_conv3x3(N, 3, 2)
        self.feature_head = subpel_conv3x3(N, feature_channels, 2)
        self.h_a = nn.Sequential(
            conv1x1(M, M), nn.LeakyReLU(inplace=True),
            space_to_depth_conv(M, M), nn.LeakyReLU(inplace=True),
            space_to_depth_conv(M, M), nn.LeakyReLU(inplace=True),
            conv1x1(M, M), nn.LeakyReLU(inplace=True),
            conv1x1(M, M),
        )
        self.h_s_means = _hyper_synthesis_branch(M)
        self.h_s_scales = _hyper_synthesis_branch(M)
        self.entropy_bottleneck = EntropyBottleneck(M)
        self.gaussian_conditional = GaussianConditional(None)

    def _synthesize(self, y_hat: Tensor) -> dict:
        h = self.g_s(y_hat)
        return {"x_hat": self.rec_head(h), "features": self.feature_head(h)}

    def _hyper(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        return self.h_s_scales(z_hat), self.h_s_means(z_hat)

    def forward(self, x: Tensor) -> dict:
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self._hyper(z_hat)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        out = self._synthesize(y_hat)
        out["likelihoods"] = {"y": y_likelihoods, "z": z_likelihoods}
        return out

    def _encode(self, x: Tensor) -> tuple[LatentPayload, dict]:
        gc = self.gaussian_conditional
        y = self.g_a(x)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        scales, means = self._hyper(z_hat)
        y_strings = gc.compress(y, gc.build_indexes(scales), means=means)
        y_hat = gc.quantize(y, "dequantize", means)  # == what the decoder gets from y_strings
        payload = LatentPayload([y_strings[0], z_strings[0]], list(z.shape[-2:]))
        return payload, {"y": y_hat, "z": z_hat}

    def _decode(self, payload: LatentPayload) -> dict:
        y_string, z_string = payload.strings
        z_hat = self.entropy_bottleneck.decompress([z_string], payload.shape)
        scales, means = self._hyper(z_hat)
        indexes = self.gaussian_conditional.build_indexes(scales)
        y_hat = self.gaussian_conditional.decompress([y_string], indexes, means=means)
        return {"y": y_hat, "z": z_hat}

    @torch.no_grad()
    def quantize_latents(self, x: Tensor) -> dict[str, Tensor]:
        """Encoder-side quantized latents ``{"y", "z"}`` (what the decoder must recover)."""
        return self._encode(x)[1]

    @torch.no_grad()
    def decode_latents(self, payload: LatentPayload) -> dict[str, Tensor]:
        """Decoder-side quantized latents ``{"y", "z"}`` from a payload."""
        return self._decode(payload)

    def compress_latents(self, x: Tensor) -> LatentPayload:
        """Code ``x`` (batch 1): strings ``[y, z]``, shape ``[h, w]`` of ``z``."""
        return self._encode(x)[0]

    def decompress_latents(self, payload: LatentPayload) -> dict:
        """Decode ``z`` then ``y`` (one parallel pass each) and synthesize ``x_hat`` and ``u``."""
        return self._synthesize(self._decode(payload)["y"])


__all__ = ["DLPRLossyCodec", "dlpr_analysis", "dlpr_synthesis_trunk"]
