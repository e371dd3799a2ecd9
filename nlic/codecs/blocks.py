"""Shared building blocks of the lossy codecs that CompressAI does not provide.

- :class:`WindowAttentionBlock`: a compact Swin-style transformer block (Liu et al., "Swin
  Transformer", ICCV 2021) on ``B x C x H x W`` maps: window multi-head self-attention with a
  learned relative position bias, optional cyclic shift, and a residual MLP, both pre-LayerNorm.
  Used by the DLPR lossy codec (:mod:`nlic.codecs.dlpr`).
- :func:`space_to_depth_conv` / :func:`depth_to_space_conv`: resolution changes that keep every
  sample (pixel (un)shuffle + 1x1 convolutions), the "signal-preserving" hyper transforms of the
  coarse-to-fine hyperprior (:mod:`nlic.codecs.c2f`) and of DLPR's hyper coder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from compressai.layers import conv1x1
from torch import Tensor, nn

#: additive attention bias that blocks a key (Swin uses -100; exp(-100) is 4e-44)
_MASKED = -100.0


def space_to_depth_conv(in_ch: int, out_ch: int, r: int = 2) -> nn.Sequential:
    """Downsample by ``r`` without discarding samples: pixel-unshuffle, then a 1x1 convolution."""
    return nn.Sequential(nn.PixelUnshuffle(r), conv1x1(in_ch * r * r, out_ch))


def depth_to_space_conv(in_ch: int, out_ch: int, r: int = 2) -> nn.Sequential:
    """Upsample by ``r``: a 1x1 convolution to ``out_ch * r * r`` channels, then pixel-shuffle."""
    return nn.Sequential(conv1x1(in_ch, out_ch * r * r), nn.PixelShuffle(r))


def _window_partition(x: Tensor, ws: int) -> Tensor:
    """``B x H x W x C`` (H, W multiples of ``ws``) -> ``(B * nW) x ws*ws x C``."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, C)


def _window_reverse(windows: Tensor, ws: int, B: int, H: int, W: int) -> Tensor:
    """Inverse of :func:`_window_partition`."""
    C = windows.shape[-1]
    x = windows.view(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ``ws x ws`` windows with a relative position bias.

    Args:
        dim: channels (must be divisible by ``num_heads``).
        num_heads: attention heads.
        window_size: window side ``ws``.
    """

    relative_position_index: Tensor

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.window_size = ws = window_size
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)  # N x N x 2
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * ws - 1) + rel[..., 1],
                             persistent=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x``: ``(B * nW) x N x C``; ``mask``: ``nW x N x N`` additive (0 or -100) or ``None``."""
        Bw, N, C = x.shape
        q, k, v = self.qkv(x).view(Bw, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(N, N, self.num_heads).permute(2, 0, 1).unsqueeze(0)  # 1 x heads x N x N
        if mask is not None:
            nW = mask.shape[0]
            bias = (bias.unsqueeze(1) + mask[None, :, None]).expand(Bw // nW, -1, -1, -1, -1)
            bias = bias.reshape(Bw, self.num_heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(Bw, N, C))


class WindowAttentionBlock(nn.Module):
    """Swin-style block on feature maps: ``x + W-MSA(LN(x))``, then ``x + MLP(LN(x))``.

    Works for any ``H x W``: the map is zero-padded (bottom/right) to a multiple of the window
    and the padded positions are masked out as keys, so the output at real positions does not
    depend on the padding (a choice: the Swin reference pads without masking).  With
    ``shift=True`` the windows are cyclically shifted by half a window (SW-MSA) with the usual
    region mask; a map no larger than one window is never shifted.

    Args:
        dim: channels.
        num_heads: attention heads.
        window_size: window side.
        shift: shifted windows (SW-MSA) instead of regular ones (W-MSA).
        mlp_ratio: hidden width of the MLP relative to ``dim``.
    """

    def __init__(self, dim: int, num_heads: int = 4, window_size: int = 8, shift: bool = False,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def _attention_mask(self, H: int, W: int, Hp: int, Wp: int, shift: int, device: torch.device
                        ) -> Tensor | None:
        """``nW x N x N`` additive mask: tokens attend only to real tokens of their own region."""
        if shift == 0 and Hp == H and Wp == W:
            return None
        ws = self.window_size
        region = torch.zeros(Hp, Wp, device=device)
        if shift:
            cuts = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
            for i, hs in enumerate(cuts):
                for j, wsl in enumerate(cuts):
                    region[hs, wsl] = 3 * i + j
        pad = torch.ones(Hp, Wp, dtype=torch.bool, device=device)
        pad[:H, :W] = False
        pad = torch.roll(pad, shifts=(-shift, -shift), dims=(0, 1))
        region = region.masked_fill(pad, -1.0)  # padding: a region of its own
        ids = _window_partition(region[None, :, :, None], ws).squeeze(-1)  # nW x N
        mask = ids[:, None, :] != ids[:, :, None]
        return torch.zeros(mask.shape, device=device).masked_fill(mask, _MASKED)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        ws = self.window_size
        shift = self.shift_size if max(H, W) > ws else 0
        t = x.permute(0, 2, 3, 1)  # B x H x W x C
        h = self.norm1(t)
        ph, pw = (-H) % ws, (-W) % ws
        if ph or pw:
            h = F.pad(h, (0, 0, 0, pw, 0, ph))
        Hp, Wp = H + ph, W + pw
        if shift:
            h = torch.roll(h, shifts=(-shift, -shift), dims=(1, 2))
        mask = self._attention_mask(H, W, Hp, Wp, shift, x.device)
        h = self.attn(_window_partition(h, ws), mask)
        h = _window_reverse(h, ws, B, Hp, Wp)
        if shift:
            h = torch.roll(h, shifts=(shift, shift), dims=(1, 2))
        t = t + h[:, :H, :W]
        t = t + self.mlp(self.norm2(t))
        return t.permute(0, 3, 1, 2).contiguous()


def window_attention_stage(dim: int, num_heads: int, window_size: int, mlp_ratio: float = 4.0
                           ) -> nn.Sequential:
    """Two :class:`WindowAttentionBlock` s, regular then shifted windows (one Swin stage)."""
    return nn.Sequential(
        WindowAttentionBlock(dim, num_heads, window_size, shift=False, mlp_ratio=mlp_ratio),
        WindowAttentionBlock(dim, num_heads, window_size, shift=True, mlp_ratio=mlp_ratio),
    )


__all__ = [
    "WindowAttention",
    "WindowAttentionBlock",
    "depth_to_space_conv",
    "space_to_depth_conv",
    "window_attention_stage",
]
