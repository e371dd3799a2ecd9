"""Wavefront coding of the quantized residual of a batch of 64x64 patches.

The encoder knows every residual, so it evaluates the integer network on whole patches at once;
the decoder evaluates it wavefront by wavefront (all pixels of one wavefront, in every patch,
together) as the residuals appear.  Both reach the same integers (see
:mod:`nlic.residual.integer`), then code each (wavefront, channel) group with the same steps:

1. :meth:`ResidualCoder._code_group` turns the integer mixture into windows of bins
   (:mod:`nlic.entropy.pmf`), grouped by width;
2. each width group is one call into the range coder (window index, or the escape entry);
3. escaped symbols follow, uniform over their feasible bins.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from nlic.entropy.pmf import BinParams, window_bounds, window_pmf, window_width
from nlic.entropy.range_coder import SymbolDecoder, SymbolEncoder
from nlic.errors import BitstreamError
from nlic.residual.integer import ChannelParams, IntegerHead, exact_float32
from nlic.residual.masks import schedule
from nlic.residual.patches import PATCH
from nlic.residual.quantizer import bin_width

CHANNELS = 3


class ResidualCoder:
    """Codes quantized residuals (as bin indices) with one integer head.

    Args:
        head: the integer network of the tau being coded.
        mask: context mask name (sets the wavefront schedule).
        kernel: context window size.
    """

    def __init__(self, head: IntegerHead, mask: str, kernel: int) -> None:
        self.head = head
        self.steps = schedule(mask, PATCH)
        self.halo = kernel // 2
        self.offsets = head.offsets

    # ------------------------------------------------------------------ encode
    @torch.no_grad()
    def encode(self, bins: Tensor, lo: Tensor, hi: Tensor, valid: Tensor, tau: int) -> bytes:
        """Encode ``bins`` ``[P, 3, 64, 64]`` (int64) with feasible bins ``lo``/``hi`` (same shape)
        at the ``valid`` pixels ``[P, 64, 64]``."""
        w = bin_width(tau)
        with exact_float32():
            r = (bins * w).float()
            act, skip = self.head.context_full(r)
            trunk = self.head.trunk_features(act)
            current = r.permute(0, 2, 3, 1)
            params = [self.head.channel_params(c, trunk, skip, current) for c in range(CHANNELS)]
        enc = SymbolEncoder()
        for rows, cols in self.steps:
            v = valid[:, rows, cols]
            if not bool(v.any()):
                continue
            for c in range(CHANNELS):
                group = ChannelParams(*(t[:, rows, cols][v] for t in (params[c].logits, params[c].means,
                                                                       params[c].log_scales)))
                self._code_group(enc, group, tau, lo[:, c, rows, cols][v], hi[:, c, rows, cols][v],
                                 bins[:, c, rows, cols][v])
        return enc.finish()

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode(self, data: bytes, lo: Tensor, hi: Tensor, valid: Tensor, tau: int) -> Tensor:
        """Decode the bins ``[P, 3, 64, 64]`` (zero outside ``valid``)."""
        w = bin_width(tau)
        h = self.halo
        P = valid.shape[0]
        r_pad = torch.zeros(P, CHANNELS, PATCH + 2 * h, PATCH + 2 * h)
        bins = torch.zeros(P, CHANNELS, PATCH, PATCH, dtype=torch.long)
        dec = SymbolDecoder(data)
        di = np.array([o[0] for o in self.offsets])[:, None]
        dj = np.array([o[1] for o in self.offsets])[:, None]
        for rows, cols in self.steps:
            v = valid[:, rows, cols]
            if not bool(v.any()):
                continue
            with exact_float32():
                taps = r_pad[:, :, torch.as_tensor(rows[None] + h + di), torch.as_tensor(cols[None] + h + dj)]
                taps = taps.permute(0, 3, 2, 1).reshape(P, len(rows), -1)[v]  # [N, taps*3], (tap, rgb)
                act, skip = self.head.context_gathered(taps)
                trunk = self.head.trunk_features(act)
            current = torch.zeros(trunk.shape[0], CHANNELS)
            for c in range(CHANNELS):
                with exact_float32():
                    group = self.head.channel_params(c, trunk, skip, current)
                k = self._code_group(dec, group, tau, lo[:, c, rows, cols][v], hi[:, c, rows, cols][v])
                current[:, c] = (k * w).float()
            step_bins = torch.zeros(P, len(rows), CHANNELS, dtype=torch.long)
            step_bins[v] = torch.div(current.long(), w, rounding_mode="floor")
            bins[:, :, rows, cols] = step_bins.permute(0, 2, 1)
            r_pad[:, :, rows + h, cols + h] = (step_bins * w).float().permute(0, 2, 1)
        return bins

    # ------------------------------------------------------------------ one group of symbols
    @staticmethod
    def _code_group(coder: SymbolEncoder | SymbolDecoder, params: ChannelParams, tau: int, lo: Tensor,
                    hi: Tensor, symbols: Tensor | None = None) -> Tensor:
        """Code one channel of one wavefront: encode ``symbols`` (bins) or decode and return them.

        Window step: each symbol's window of bins (or the escape entry), one coder call per width.
        Escape step: escaped symbols, coded with the same mixture over their feasible bins outside
        the window, so escaping costs no rate, only time.
        """
        p = BinParams.of(params.logits.numpy(), params.means.numpy(), params.log_scales.numpy(), tau)
        lo_n, hi_n = lo.numpy(), hi.numpy()
        sym = None if symbols is None else symbols.numpy()
        first, last = window_bounds(p, lo_n, hi_n)
        widths = window_width(first, last)
        out = np.zeros(len(lo_n), dtype=np.int64)
        escaped = np.zeros(len(lo_n), dtype=bool)
        for width in np.unique(widths).tolist():  # ascending: the decoder meets them in this order
            idx = np.flatnonzero(widths == width)
            pmf = window_pmf(p.take(idx), first[idx], width, lo_n[idx], hi_n[idx])
            if sym is not None:
                local = sym[idx] - first[idx]
                local = np.where((local < 0) | (local >= width), width, local)
                coder.encode(local, pmf)
            else:
                local = coder.decode(pmf)
            out[idx] = first[idx] + local
            escaped[idx] = local == width
        e = np.flatnonzero(escaped)
        if len(e):
            out[e] = ResidualCoder._code_escapes(coder, p.take(e), first[e], widths[e], lo_n[e], hi_n[e],
                                                 None if sym is None else sym[e])
        if sym is None and bool(((out < lo_n) | (out > hi_n)).any()):
            raise BitstreamError("residual stream decodes outside the feasible range")
        return torch.from_numpy(out)

    @staticmethod
    def _code_escapes(coder: SymbolEncoder | SymbolDecoder, p: BinParams, first: np.ndarray, width: np.ndarray,
                      lo: np.ndarray, hi: np.ndarray, symbols: np.ndarray | None) -> np.ndarray:
        """Escaped symbols: the mixture over every feasible bin, the window's bins excluded."""
        span = window_width(lo, hi)
        out = np.zeros(len(lo), dtype=np.int64)
        for size in np.unique(span).tolist():
            idx = np.flatnonzero(span == size)
            pmf = window_pmf(p.take(idx), lo[idx], size, lo[idx], hi[idx])[:, :-1]
            col = np.arange(size)[None, :] + lo[idx, None]
            inside = (col >= first[idx, None]) & (col < (first + width)[idx, None])
            # +1: a row stays codable even where the model put no mass outside the window
            pmf = np.where(inside, 0.0, pmf + 1.0)
            if symbols is not None:
                coder.encode(symbols[idx] - lo[idx], pmf)
            else:
                out[idx] = lo[idx] + coder.decode(pmf)
        return out
