"""Lossy codecs: plain ``nn.Module``s with a CompressAI-like API (see :mod:`nlic.codecs.base`)."""

from nlic.codecs.base import LatentPayload, LossyCodec

__all__ = ["LatentPayload", "LossyCodec"]
