"""Python API: load a model, compress uint8 arrays to bytes and back.

>>> from nlic.api import load_codec
>>> codec = load_codec("model.pt")          # or None for the shipped default model
>>> data = codec.compress(pixels, tau=2)    # pixels: H x W x 3 uint8
>>> restored = codec.decompress(data)       # every sample within 2 of ``pixels``
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nlic.coding.image import DEFAULT_TILE, ImageCodec
from nlic.errors import ModelError
from nlic.model_io import load_model

#: the trained model shipped inside the package (see README "Default model")
DEFAULT_MODEL = Path(__file__).parent / "assets" / "default_model.pt"


class NearLosslessFileCodec:
    """A loaded model ready to code images; wraps :class:`~nlic.coding.image.ImageCodec`."""

    def __init__(self, image_codec: ImageCodec, config: dict, source: Path) -> None:
        self.image_codec = image_codec
        self.config = config
        self.source = source

    @property
    def model_id(self) -> str:
        return self.image_codec.model_id.hex()

    def compress(self, image: np.ndarray, tau: int) -> bytes:
        return self.image_codec.compress(image, tau)

    def decompress(self, data: bytes) -> np.ndarray:
        return self.image_codec.decompress(data)


def default_model_path() -> Path:
    if not DEFAULT_MODEL.exists():
        raise ModelError("no default model is shipped with this installation; pass --model CKPT")
    return DEFAULT_MODEL


def load_codec(model: str | Path | None = None, tile: int = DEFAULT_TILE) -> NearLosslessFileCodec:
    """Load a model file or ``nlic-train`` checkpoint (``None``: the shipped default model)."""
    path = Path(model) if model is not None else default_model_path()
    codec, config, mid = load_model(path)
    return NearLosslessFileCodec(ImageCodec(codec, mid, tile=tile), config, path)
