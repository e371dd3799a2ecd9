"""Shared pieces of the codecs built on CompressAI's latent codecs (``compressai.latent_codecs``).

:class:`LatentCodecModel` is ``g_a -> latent codec -> g_s`` (the structure of CompressAI's
``SimpleVAECompressionModel``) adapted to the nlic contract: the synthesis emits
``3 + feature_channels`` channels, and one image's strings/shape travel in a :class:`LatentPayload`.
"""

from __future__ import annotations

from typing import Any

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.latent_codecs import HyperLatentCodec, HyperpriorLatentCodec, LatentCodec
from compressai.layers import GDN
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

from nlic.codecs.base import LatentPayload
from nlic.codecs.compressai_base import CompressAICodec


def analysis_transform(in_ch: int, N: int, M: int) -> nn.Sequential:
    """Four stride-2 convolutions with GDN: image -> latent at stride 16."""
    return nn.Sequential(
        conv(in_ch, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M)
    )


def autoencoder(N: int, M: int, feature_channels: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``g_a`` (image -> ``M``-channel latent) and ``g_s`` (latent -> image + ``feature_channels`` maps)."""
    return analysis_transform(3, N, M), synthesis_transform(M, N, 3 + feature_channels)


def synthesis_transform(M: int, N: int, out_ch: int) -> nn.Sequential:
    """Four stride-2 transposed convolutions with inverse GDN: latent -> full resolution."""
    return nn.Sequential(
        deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
        deconv(N, N), GDN(N, inverse=True), deconv(N, out_ch),
    )


def mean_scale_hyper_transforms(N: int, M: int) -> tuple[nn.Sequential, nn.Sequential]:
    """``h_a`` / ``h_s`` of the mean-scale hyperprior (Minnen et al. 2018); ``h_s`` emits 2M channels."""
    h_a = nn.Sequential(
        conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True),
        conv(N, N), nn.LeakyReLU(inplace=True), conv(N, N),
    )
    h_s = nn.Sequential(
        deconv(N, M), nn.LeakyReLU(inplace=True),
        deconv(M, M * 3 // 2), nn.LeakyReLU(inplace=True),
        conv(M * 3 // 2, M * 2, stride=1, kernel_size=3),
    )
    return h_a, h_s


def entropy_parameters(in_ch: int, out_ch: int) -> nn.Sequential:
    """Pointwise entropy-parameters network (Minnen et al. 2018): three 1x1 convs ramping in -> out.

    With ``in_ch = 4M, out_ch = 2M`` this is exactly CompressAI's ``M*12//3 -> M*10//3 -> M*8//3 ->
    M*6//3`` stack.  It must stay pointwise: the checkerboard coder evaluates it on gathered halves.
    """
    ch = [in_ch + (out_ch - in_ch) * i // 3 for i in range(4)]
    return nn.Sequential(
        nn.Conv2d(ch[0], ch[1], 1), nn.LeakyReLU(inplace=True),
        nn.Conv2d(ch[1], ch[2], 1), nn.LeakyReLU(inplace=True),
        nn.Conv2d(ch[2], ch[3], 1),
    )


def hyperprior(y: LatentCodec, N: int, h_a: nn.Module, h_s: nn.Module) -> HyperpriorLatentCodec:
    """``y`` under a hyperprior: ``z`` (``N`` channels) coded by a factorized bottleneck."""
    hyper = HyperLatentCodec(entropy_bottleneck=EntropyBottleneck(N), h_a=h_a, h_s=h_s)
    return HyperpriorLatentCodec(latent_codec={"y": y, "hyper": hyper})


class LatentCodecModel(CompressAICodec):
    """A lossy codec ``g_a -> latent_codec -> g_s`` with the DLPR feature head.

    The codecs built on it take ``N`` (channels of the transforms and of ``z``), ``M`` (channels
    of the latent ``y``) and ``feature_channels`` (channels of the feature map ``u`` handed to the
    residual coder); :meth:`_autoencoder` builds their four-stage GDN ``g_a`` / ``g_s``.

    Subclasses set ``g_a`` (image -> y), ``g_s`` (y_hat -> ``3 + feature_channels`` channels at full
    resolution) and ``latent_codec`` (a CompressAI :class:`~compressai.latent_codecs.LatentCodec`,
    optionally wrapped in a :class:`~compressai.latent_codecs.HyperpriorLatentCodec`).

    Payload: ``strings`` are the latent codec's strings in its order (for hyperprior codecs the
    ``y`` strings first, ``z`` last); ``shape`` is ``[y_h, y_w]`` plus ``[z_h, z_w]`` with a hyperprior.
    """

    g_a: nn.Module
    g_s: nn.Module
    latent_codec: LatentCodec

    def _autoencoder(self, N: int, M: int) -> None:
        self.N, self.M = N, M
        self.g_a, self.g_s = autoencoder(N, M, self.feature_channels)

    def _synthesize(self, y_hat: Tensor) -> dict:
        x_hat, features = self.split_synthesis(self.g_s(y_hat))
        return {"x_hat": x_hat, "features": features}

    def _y_shape(self, h: int, w: int) -> tuple[int, ...]:
        """The ``shape`` the ``y`` latent codec's ``decompress`` expects."""
        return (h, w)

    def forward(self, x: Tensor) -> dict:
        y = self.g_a(x)
        y_out = self.latent_codec(y)
        out = self._synthesize(y_out["y_hat"])
        out["likelihoods"] = dict(y_out["likelihoods"])
        return out

    @torch.no_grad()
    def encode_latents(self, x: Tensor) -> tuple[LatentPayload, Tensor]:
        """Entropy-code one image; also return the quantized latent ``y_hat`` the decoder will rebuild."""
        if x.size(0) != 1:
            raise ValueError(f"compress_latents codes one image at a time, got batch {x.size(0)}")
        y = self.g_a(x)
        out = self.latent_codec.compress(y)
        strings = [bytes(s[0]) for s in out["strings"]]
        shape = [int(y.size(-2)), int(y.size(-1))]
        if isinstance(out["shape"], dict):
            shape += [int(s) for s in out["shape"]["hyper"]]
        return LatentPayload(strings, shape), out["y_hat"]

    def compress_latents(self, x: Tensor) -> LatentPayload:
        return self.encode_latents(x)[0]

    @torch.no_grad()
    def decompress_latents(self, payload: LatentPayload) -> dict:
        strings = [[s] for s in payload.strings]
        h, w = payload.shape[:2]
        shape: Any = self._y_shape(h, w)
        if isinstance(self.latent_codec, HyperpriorLatentCodec):
            shape = {"y": shape, "hyper": tuple(payload.shape[2:4])}
        y_hat = self.latent_codec.decompress(strings, shape)["y_hat"]
        return self._synthesize(y_hat)


__all__ = ["LatentCodecModel", "analysis_transform", "autoencoder", "entropy_parameters", "hyperprior",
           "mean_scale_hyper_transforms", "synthesis_transform"]
