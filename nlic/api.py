"""Python API: load a model, compress uint8 arrays to bytes and back.

>>> import numpy as np
>>> from PIL import Image
>>> from nlic.api import load_codec
>>> pixels = np.asarray(Image.open("photo.png").convert("RGB"))   # H x W x 3 uint8
>>> codec = load_codec()                        # the shipped default model, or load_codec("model.pt")
>>> result = codec.compress(pixels, tau=2)      # result.data: the .nlic bytes; result.bpp, .parts
>>> restored = codec.decompress(result.data)    # restored.pixels: every sample within 2 of pixels
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from nlic.bitstream.container import Container
from nlic.coding.image import DEFAULT_TILE, Compressed, Decompressed, ImageCodec
from nlic.errors import ModelError
from nlic.model_io import load_model
from nlic.model_store import DEFAULT_MODEL, find_model, store_dir

__all__ = ["DEFAULT_MODEL", "Codec", "Compressed", "Decompressed", "load_codec", "load_codec_for"]


class Codec:
    """A loaded model ready to code images."""

    def __init__(self, image_codec: ImageCodec) -> None:
        self.image_codec = image_codec

    @property
    def model_id(self) -> str:
        return self.image_codec.model_id.hex()

    @property
    def source(self) -> Path:
        return self.image_codec.loaded.path

    @property
    def config(self) -> dict:
        return self.image_codec.loaded.config

    def compress(self, image: np.ndarray, tau: int = 0, alpha: np.ndarray | None = None,
                 lossy_step: float | None = None, adapt: bool = False) -> Compressed:
        """Compress ``image`` (``H x W x 3`` RGB or ``H x W`` / ``H x W x 1`` grey, uint8) so that every
        decoded sample is within ``tau`` of it; ``alpha`` (``H x W`` uint8) is kept losslessly;
        ``lossy_step``: the quantization step of a step-quantized lossy layer (lossy=flow);
        ``adapt``: re-fit the output layers to each tile (smaller files, slower encoding)."""
        return self.image_codec.compress(image, tau, alpha=alpha, adapt=adapt, lossy_step=lossy_step)

    def decompress(self, data: bytes) -> Decompressed:
        """Decode .nlic bytes: ``.pixels`` (``H x W x 3`` or ``H x W x 1``), ``.alpha``, ``.mode``."""
        return self.image_codec.decompress(data)

    def warm_up(self, image: np.ndarray, taus: Iterable[int] = (0, 2)) -> float:
        """Code the top-left WARM_UP_SIDE square of ``image`` once at every tau and return the seconds
        it took; call it before timing.  The coder's compiled (numba) functions are compiled on their
        first call after an install (seconds, once: later processes load them from numba's cache) and
        loaded on their first call in a process (about 0.3 s); left in the first image's time, that
        one-time cost made its s/MP tens of times the coder's."""
        start = time.perf_counter()
        crop = np.ascontiguousarray(image[:WARM_UP_SIDE, :WARM_UP_SIDE])
        for tau in taus:
            self.decompress(self.compress(crop, tau).data)
        return time.perf_counter() - start


#: side of the square :meth:`Codec.warm_up` codes (one 64x64 patch, the coder's unit)
WARM_UP_SIDE = 64


def default_model_path() -> Path:
    if not DEFAULT_MODEL.exists():
        raise ModelError("no default model is shipped with this installation; pass --model MODEL")
    return DEFAULT_MODEL


def load_codec_for(data: bytes, model: str | Path | None = None, device: str = "cpu") -> Codec:
    """The codec that decodes the .nlic bytes ``data``: ``model`` if given, else the model the file
    names by id, from the model store or the shipped default (see :mod:`nlic.model_store`)."""
    if model is not None:
        return load_codec(model, device=device)
    wanted = Container.from_bytes(data).model_id
    stored = store_dir() / f"{wanted.hex()}.pt"
    if stored.is_file():
        return load_codec(stored, device=device)
    default = load_codec(None, device=device) if DEFAULT_MODEL.exists() else None
    default_id = None if default is None else default.image_codec.model_id
    if default is not None and default_id == wanted:
        return default
    return load_codec(find_model(wanted, default_id), device=device)  # raises, naming where it looked


def load_codec(model: str | Path | None = None, tile: int = DEFAULT_TILE, stored_fallback: bool = True,
               device: str = "cpu", shift_grids: bool = True, fit_scales: bool = True,
               patch_scales: bool = True, grey_red: bool = True, jxl_tiles: bool = True) -> Codec:
    """Load a model file or ``nlic-train`` checkpoint (``None``: the shipped default model);
    ``stored_fallback=False`` always keeps the learned code (studies of the model itself);
    ``device``: ``cpu``, ``cuda`` or ``auto`` (files are identical whichever runs them);
    ``shift_grids=False`` / ``fit_scales=False``: no per-patch grid offsets at tau >= 1 / no
    log-scale offsets (with both off, format 2 files; see :mod:`nlic.coding.grid`,
    :mod:`nlic.coding.scales`); ``patch_scales=False``: log-scale offsets per tile only, not
    refined per patch (format 3 files); ``grey_red=False``: a colour tile's R always from the colour
    heads, never the grey heads (no format 8 tiles, no format 9 tile with the grey heads' flag:
    about a fifth faster to encode and decode where the grey heads would have coded R, 0.5-1.2 %
    larger files); ``jxl_tiles=False``: nothing stored as JPEG XL lossless (at tau = 0 the encoder
    codes the whole image as JPEG XL too and keeps it where it is smaller than the tiles; a tile
    close to its PNG is tried as JPEG XL at any tau: see :mod:`nlic.coding.fallback`)."""
    path = Path(model) if model is not None else default_model_path()
    codec = ImageCodec(load_model(path), tile=tile, stored_fallback=stored_fallback, device=device,
                       shift_grids=shift_grids, fit_scales=fit_scales, patch_scales=patch_scales)
    codec.grey_red = grey_red
    codec.jxl_tiles = jxl_tiles
    return Codec(codec)
