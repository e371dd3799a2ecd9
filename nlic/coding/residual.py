"""Wavefront coding of the quantized residual of one tile.

Encoder and decoder run the *same* step function with the same tensor shapes, so their floating
point results agree bit for bit; the encoder simply knows every symbol up front.  Patches are
processed in groups of ``group`` so memory does not grow with the image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nlic.entropy.range_coder import SymbolDecoder, SymbolEncoder
from nlic.errors import BitstreamError
from nlic.residual.masks import schedule
from nlic.residual.mixture import MixtureParams
from nlic.residual.network import ResidualNetwork
from nlic.residual.patches import PATCH, patchify, unpatchify
from nlic.residual.quantizer import bin_width, quantize_residual


@dataclass
class Alphabet:
    """Adaptive residual interval: bin indices ``kmin[c]..kmax[c]`` per channel (side info)."""

    kmin: list[int]
    kmax: list[int]

    @classmethod
    def of(cls, k: Tensor, valid: Tensor) -> Alphabet:
        """From bin indices ``k`` ``[P, 3, 64, 64]`` over the valid pixels ``[P, 64, 64]``."""
        kv = k.permute(1, 0, 2, 3)[:, valid]
        if kv.numel() == 0:
            return cls([0, 0, 0], [0, 0, 0])
        return cls(kv.min(1).values.long().tolist(), kv.max(1).values.long().tolist())


#: ``symbol_fn(channel, pmf, start, escape_rows)`` codes one batch and returns alphabet indices.
#: ``start`` is ``None`` when ``pmf`` spans the whole alphabet; otherwise ``pmf`` covers the window
#: ``start .. start + 2R`` (alphabet indices) plus a final escape entry, and ``escape_rows(mask)``
#: gives the uniform distribution over the feasible bins used to code escaped symbols.
SymbolFn = Callable[[int, np.ndarray, "np.ndarray | None", Callable[[np.ndarray], np.ndarray]], np.ndarray]


class ResidualCoder:
    """Codes the quantized residual of a tile given the lossy image and features."""

    def __init__(self, network: ResidualNetwork, group: int = 64, window: int = 32) -> None:
        self.net = network
        self.group = group
        # per-symbol support: 2*window+1 bins around the mixture mean plus an escape symbol, so
        # the coder's cost does not grow with the image's residual interval
        self.window = window
        self.steps = schedule(network.mask, PATCH)
        self.halo = network.context.kernel // 2

    def _run(
        self, feats: Tensor, x_hat: Tensor, valid: Tensor, tau: int, alphabet: Alphabet,
        r_pad: Tensor, symbol_fn: SymbolFn, write_back: bool,
    ) -> None:
        """Run every wavefront step over one group of patches.

        feats ``[P, 64, 64, C]``, x_hat ``[P, 3, 64, 64]``, valid ``[P, 64, 64]`` bool,
        r_pad ``[P, 3, 64+2h, 64+2h]`` (filled by the encoder, filled step by step when decoding).
        ``symbol_fn(channel, pmf, flat_index)`` encodes or decodes one batch of symbols.
        """
        w = bin_width(tau)
        h = self.halo
        K = self.net.mixtures
        lo_all = torch.div(quantize_residual(-x_hat, tau), w, rounding_mode="floor")  # lowest feasible bin
        hi_all = torch.div(quantize_residual(255.0 - x_hat, tau), w, rounding_mode="floor")
        for rows, cols in self.steps:
            v = valid[:, rows, cols]
            if not bool(v.any()):
                continue
            ctx = self.net.context.gathered(r_pad, rows, cols)
            raw = self.net.raw_params(feats[:, rows, cols, :], ctx, tau)[v]
            params = MixtureParams.from_raw(raw.double(), K)
            log_w = F.log_softmax(params.logits, dim=-1)
            coupling = torch.zeros(raw.shape[0], 3, dtype=torch.float64)
            klo = lo_all[:, :, rows, cols].permute(0, 2, 1)[v]  # [N, 3] lowest feasible bin
            khi = hi_all[:, :, rows, cols].permute(0, 2, 1)[v]
            for c in range(3):
                means = params.channel_means(coupling)[:, c, :]
                inv_s = torch.exp(-params.log_scales[:, c, :])
                kmin, n_bins = alphabet.kmin[c], alphabet.kmax[c] - alphabet.kmin[c] + 1
                a_lo = (klo[:, c] - kmin).clamp(min=0)[:, None]  # feasible bins, alphabet indices
                a_hi = (khi[:, c] - kmin).clamp(max=n_bins - 1)[:, None]
                if n_bins <= 2 * self.window + 2:
                    start = None
                    first = torch.zeros(raw.shape[0], 1, dtype=torch.float64)
                    n_win = n_bins
                else:
                    centre = torch.round((log_w.exp() * means).sum(-1) / w) - kmin
                    first = (centre - self.window).clamp(0, n_bins - 2 * self.window - 1)[:, None]
                    start = first[:, 0].long()
                    n_win = 2 * self.window + 1
                j = first + torch.arange(n_win + 1, dtype=torch.float64)[None, :]  # bin index of each edge
                e = (j + kmin) * w - tau - 0.5
                cdf = torch.sigmoid((e[..., None] - means[:, None, :]) * inv_s[:, None, :])  # [N, n+1, K]
                # the first feasible bin takes the lower tail, the last the upper tail; bins outside
                # the feasible range get zero mass (their two edges coincide)
                cdf = torch.where((j <= a_lo)[..., None], 0.0, cdf)
                cdf = torch.where((j > a_hi)[..., None], 1.0, cdf)
                weights = log_w.exp()[..., None]
                pmf = torch.bmm(cdf[:, 1:] - cdf[:, :-1], weights)[..., 0]
                if start is not None:  # escape: the mass outside the window
                    outside = 1.0 - pmf.sum(-1, keepdim=True)
                    pmf = torch.cat([pmf, outside.clamp_min(1e-12)], dim=-1)

                def escape_rows(mask: np.ndarray, lo=a_lo[:, 0], hi=a_hi[:, 0], n=n_bins) -> np.ndarray:
                    m = torch.as_tensor(mask)
                    k = torch.arange(n)[None, :]
                    return ((k >= lo[m][:, None]) & (k <= hi[m][:, None])).double().numpy()

                sym = symbol_fn(c, pmf.numpy(), None if start is None else start.numpy(), escape_rows)
                sym_t = torch.as_tensor(sym, dtype=torch.long)
                # component masses of the coded bin update the mixture weights for the next channel
                k_sym = sym_t.double()[:, None]
                lo_e = torch.where(k_sym <= a_lo, float("-inf"), (k_sym + kmin) * w - tau - 0.5)
                hi_e = torch.where(k_sym >= a_hi, float("inf"), (k_sym + kmin) * w + tau + 0.5)
                f_lo = torch.where(torch.isinf(lo_e), 0.0, torch.sigmoid((lo_e.nan_to_num(0.0) - means) * inv_s))
                f_hi = torch.where(torch.isinf(hi_e), 1.0, torch.sigmoid((hi_e.nan_to_num(0.0) - means) * inv_s))
                log_w = log_w + torch.log((f_hi - f_lo).clamp_min(1e-300))
                log_w = log_w - torch.logsumexp(log_w, dim=-1, keepdim=True)
                coupling[:, c] = (sym_t + kmin).double() * w
            if write_back:
                vals = torch.zeros(v.shape[0], len(rows), 3, dtype=r_pad.dtype)
                vals[v] = coupling.to(r_pad.dtype)
                r_pad[:, :, rows + h, cols + h] = vals.permute(0, 2, 1)

    def _groups(self, n: int):
        for start in range(0, n, self.group):
            yield slice(start, min(n, start + self.group))

    def _prepare(self, features: Tensor, x_hat: Tensor, valid: Tensor):
        feats = patchify(features).permute(0, 2, 3, 1).contiguous()
        return feats, patchify(x_hat), patchify(valid[:, None].float())[:, 0] > 0.5

    @torch.no_grad()
    def encode(self, r_hat: Tensor, features: Tensor, x_hat: Tensor, valid: Tensor, tau: int):
        """Encode ``r_hat`` ``[1, 3, H, W]`` (H, W multiples of 64; zero outside ``valid``).

        Returns ``(alphabet, bytes)``.
        """
        feats, xh, vp = self._prepare(features, x_hat, valid)
        r_p = patchify(r_hat)
        k = torch.div(r_p, bin_width(tau), rounding_mode="floor")
        alphabet = Alphabet.of(k, vp)
        h = self.halo
        r_pad = F.pad(r_p, (h, h, h, h))
        enc = SymbolEncoder()
        for g in self._groups(feats.shape[0]):
            symbols = self._symbol_stream(k[g], vp[g], alphabet)

            def put(c: int, pmf: np.ndarray, start, escape_rows, symbols=symbols) -> np.ndarray:
                sym = next(symbols)
                if start is None:
                    enc.encode(sym, pmf)
                    return sym
                idx = sym - start
                esc = (idx < 0) | (idx >= pmf.shape[1] - 1)
                enc.encode(np.where(esc, pmf.shape[1] - 1, idx), pmf)
                if esc.any():
                    enc.encode(sym[esc], escape_rows(esc))
                return sym

            self._run(feats[g], xh[g], vp[g], tau, alphabet, r_pad[g], put, write_back=False)
        return alphabet, enc.finish()

    def _symbol_stream(self, k: Tensor, valid: Tensor, alphabet: Alphabet) -> Iterator[np.ndarray]:
        """The encoder's symbols in exactly the order :meth:`_run` asks for them."""
        for rows, cols in self.steps:
            v = valid[:, rows, cols]
            if not bool(v.any()):
                continue
            kk = k[:, :, rows, cols].permute(0, 2, 1)[v]  # [N, 3]
            for c in range(3):
                yield (kk[:, c] - alphabet.kmin[c]).long().numpy()

    @torch.no_grad()
    def decode(
        self, data: bytes, features: Tensor, x_hat: Tensor, valid: Tensor, tau: int, alphabet: Alphabet
    ) -> Tensor:
        """Decode the quantized residual ``[1, 3, H, W]``."""
        feats, xh, vp = self._prepare(features, x_hat, valid)
        h = self.halo
        P = feats.shape[0]
        r_pad = torch.zeros(P, 3, PATCH + 2 * h, PATCH + 2 * h, dtype=x_hat.dtype)
        dec = SymbolDecoder(data)
        sizes = [hi - lo + 1 for lo, hi in zip(alphabet.kmin, alphabet.kmax)]

        def get(c: int, pmf: np.ndarray, start, escape_rows) -> np.ndarray:
            idx = dec.decode(pmf)
            if len(idx) and (idx.min() < 0 or idx.max() >= pmf.shape[1]):
                raise BitstreamError("residual stream decodes outside its alphabet")
            if start is None:
                return idx
            esc = idx == pmf.shape[1] - 1
            sym = idx + start
            if esc.any():
                sym[esc] = dec.decode(escape_rows(esc))
            if len(sym) and (sym.min() < 0 or sym.max() >= sizes[c]):
                raise BitstreamError("residual stream decodes outside its alphabet")
            return sym

        for g in self._groups(P):
            self._run(feats[g], xh[g], vp[g], tau, alphabet, r_pad[g], get, write_back=True)
        B, _, H, W = x_hat.shape
        return unpatchify(r_pad[:, :, h : h + PATCH, h : h + PATCH], B, H, W)
