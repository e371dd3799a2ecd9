"""Batched categorical range coding with constriction (a queue: decode order = encode order)."""

from __future__ import annotations

import constriction
import numpy as np

from nlic.errors import BitstreamError

# perfect=False: fast, deterministic fixed-point approximation shared by encoder and decoder
_FAMILY = constriction.stream.model.Categorical(perfect=False)


class SymbolEncoder:
    def __init__(self) -> None:
        self._enc = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols: np.ndarray, pmf: np.ndarray) -> None:
        """Encode ``symbols[i]`` with the (unnormalized) distribution ``pmf[i]``."""
        if len(symbols) == 0:
            return
        self._enc.encode(symbols.astype(np.int32), _FAMILY, pmf)

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
        try:
            return np.asarray(self._dec.decode(_FAMILY, pmf), dtype=np.int64)
        except Exception as err:  # constriction raises on exhausted/invalid data
            raise BitstreamError(f"residual stream is corrupt ({err})") from err
