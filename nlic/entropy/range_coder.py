"""Batched categorical range coding with constriction (a queue: decode order = encode order)."""

from __future__ import annotations

import constriction
import numpy as np

from nlic.errors import BitstreamError

# perfect=False: fast, deterministic fixed-point approximation shared by encoder and decoder
_FAMILY = constriction.stream.model.Categorical(perfect=False)
_UNIFORM = constriction.stream.model.Uniform()


class SymbolEncoder:
    def __init__(self) -> None:
        self._enc = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols: np.ndarray, pmf: np.ndarray) -> None:
        """Encode ``symbols[i]`` with the (unnormalized) distribution ``pmf[i]``."""
        if len(symbols) == 0:
            return
        if pmf.shape[-1] == 1:  # a one-symbol alphabet: the symbol is certain, costs nothing
            if np.any(symbols != 0):  # (and constriction refuses such a distribution)
                raise ValueError("symbol outside a one-symbol alphabet")
            return
        self._enc.encode(symbols.astype(np.int32, copy=False), _FAMILY, pmf)

    def encode_uniform(self, symbols: np.ndarray, sizes: np.ndarray) -> None:
        """Encode ``symbols[i]`` uniformly from ``0 .. sizes[i]-1`` (sizes of 1 cost nothing)."""
        coded = sizes > 1
        if coded.any():
            self._enc.encode(symbols[coded].astype(np.int32), _UNIFORM, sizes[coded].astype(np.int32))

    def finish(self) -> bytes:
        return self._enc.get_compressed().tobytes()


class SymbolDecoder:
    def __init__(self, data: bytes) -> None:
        if len(data) % 4:
            raise BitstreamError("residual stream length is not a multiple of 4 bytes")
        self._dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype=np.uint32).copy())

    def decode(self, pmf: np.ndarray) -> np.ndarray:
        if len(pmf) == 0:
            return np.zeros(0, dtype=np.int64)
        if pmf.shape[-1] == 1:  # certain symbol: nothing was coded (see SymbolEncoder.encode)
            return np.zeros(len(pmf), dtype=np.int64)
        try:
            return np.asarray(self._dec.decode(_FAMILY, pmf), dtype=np.int64)
        except Exception as err:  # constriction raises on exhausted/invalid data
            raise _corrupt(err) from err

    def decode_uniform(self, sizes: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`SymbolEncoder.encode_uniform`."""
        out = np.zeros(len(sizes), dtype=np.int64)
        coded = sizes > 1
        if coded.any():
            try:
                out[coded] = self._dec.decode(_UNIFORM, sizes[coded].astype(np.int32))
            except Exception as err:
                raise _corrupt(err) from err
        return out


def _corrupt(err: Exception) -> BitstreamError:
    return BitstreamError(f"residual stream is corrupt ({' '.join(str(err).split())})")


# ---------------------------------------------------------------- CompressAI latent decoding guard
#
# CompressAI's C++ rANS decoder (``compressai.ans.RansDecoder``) trusts its input: it reads 32-bit
# words forward from the start of the string without a bounds check, and in "bypass" mode (the
# escape symbol of a CDF) it keeps reading 4-bit groups for as long as they are all ones.  A crafted
# or corrupt latent string (a valid container checksum does not prove the payload is well-formed)
# therefore makes it read past the end of its buffer: a string of 0xFF bytes segfaults the
# interpreter.  The decoder reads at most one word per symbol plus, in bypass mode, about 15 bytes
# per byte of ones-runs it consumed, so zero-padding the string by ``RANS_PAD_PER_BYTE`` bytes per
# string byte and ``RANS_PAD_PER_SYMBOL`` bytes per decoded symbol keeps every read inside memory we
# own (zeros end a bypass run).  A well-formed stream never reads its padding, so results are
# unchanged; a corrupt one decodes to garbage that the shape and reconstruction checks reject.

#: padding (zero bytes) appended per byte of a latent string and per decoded symbol
RANS_PAD_PER_BYTE = 16
RANS_PAD_PER_SYMBOL = 8
RANS_PAD_EXTRA = 256


def pad_rans_string(string: bytes, n_symbols: int) -> bytes:
    """``string`` followed by enough zero bytes that decoding ``n_symbols`` cannot read past it."""
    data = bytes(string)
    pad = -len(data) % 4 + RANS_PAD_PER_BYTE * len(data) + RANS_PAD_PER_SYMBOL * max(0, n_symbols)
    return data + bytes(pad + RANS_PAD_EXTRA)


class BoundedRansDecoder:
    """Wraps a CompressAI ``RansDecoder``: ``decode_with_indexes`` sees a zero-padded string."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def decode_with_indexes(self, string, indexes, *args, **kwargs):
        return self.inner.decode_with_indexes(pad_rans_string(string, len(indexes)), indexes, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def guard_latent_decoders(module) -> int:
    """Install :class:`BoundedRansDecoder` on every CompressAI entropy model inside ``module``.

    Covers ``EntropyBottleneck``, ``GaussianConditional`` and the other entropy models that decode
    through ``entropy_coder`` (idempotent; returns how many were wrapped).  Latent codecs that build
    their own ``RansDecoder`` with ``set_stream`` (CompressAI's raster-scan autoregressive context)
    are not covered.
    """
    count = 0
    for m in module.modules():
        coder = getattr(m, "entropy_coder", None)
        decoder = getattr(coder, "_decoder", None)
        if decoder is None or isinstance(decoder, BoundedRansDecoder):
            continue
        if hasattr(decoder, "decode_with_indexes"):
            coder._decoder = BoundedRansDecoder(decoder)
            count += 1
    return count
