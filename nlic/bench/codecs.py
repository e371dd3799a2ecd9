"""Codec adapters for ``nlic bench``: one small class per codec, kept in a name -> class registry.

An adapter is built for ONE operating point (a ``tau``, or a ``distance`` for the unbounded
``jpegxl-lossy`` reference) and maps an ``H x W x 3`` uint8 array to bytes and back::

    codec = CODECS["jpegls"](Setting(tau=2), CodecOptions())
    data = codec.encode(image)
    assert abs(codec.decode(data).astype(int) - image).max() <= 2

Adding a classic codec = one subclass decorated with :func:`register_codec`.  ``max_tau`` says which
taus it supports (0 = lossless only, ``None`` = any); ``bounded = False`` marks a codec without an
l-infinity guarantee, which is run at its ``default_distances`` instead of at taus.
"""

from __future__ import annotations

import io
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import imagecodecs
import numpy as np
from PIL import Image

from nlic.errors import NlicError

#: the JPEG-LS NEAR parameter is limited to min(255, MAXVAL/2) for 8-bit samples (ITU-T T.87)
JPEGLS_MAX_NEAR = 127


@dataclass(frozen=True)
class Setting:
    """One operating point: an error bound ``tau`` (bounded codecs) or a ``distance`` (unbounded)."""

    tau: int | None = 0
    distance: float | None = None

    def label(self) -> str:
        return f"tau={self.tau}" if self.distance is None else f"d={self.distance:g}"


@dataclass(frozen=True)
class CodecOptions:
    """Options shared by all adapters (picklable: sent to worker processes)."""

    jxl_effort: int = 7
    model: str | None = None
    #: code the images' grey versions (one channel: ITU-R 601 luma, as Pillow's convert("L"))
    gray: bool = False


class Codec(ABC):
    """Base adapter: ``encode(image) -> bytes`` and ``decode(bytes) -> image`` at one setting."""

    name: ClassVar[str]
    #: human-readable name for tables and plots
    label: ClassVar[str]
    #: largest supported tau (0: lossless only; None: any tau)
    max_tau: ClassVar[int | None] = 0
    #: False for codecs with no l-infinity guarantee (run at distances, never verified against tau)
    bounded: ClassVar[bool] = True
    default_distances: ClassVar[tuple[float, ...]] = ()
    #: True: must run in the main process (e.g. holds a large model); never sent to workers
    in_process: ClassVar[bool] = False

    def __init__(self, setting: Setting, options: CodecOptions | None = None) -> None:
        self.setting = setting
        self.options = options or CodecOptions()

    @property
    def tau(self) -> int:
        return int(self.setting.tau or 0)

    @abstractmethod
    def encode(self, image: np.ndarray) -> bytes:
        """Compress an ``H x W x 3`` uint8 image."""

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """Decompress to an ``H x W x 3`` uint8 image."""

    @classmethod
    def settings(
        cls,
        taus: Sequence[int],
        distances: Sequence[float] | None = None,
        options: CodecOptions | None = None,
    ) -> list[Setting]:
        """The operating points this codec runs at, given the requested taus/distances."""
        if not cls.bounded:
            return [Setting(tau=None, distance=float(d)) for d in (distances or cls.default_distances)]
        return [Setting(tau=t) for t in taus if cls.max_tau is None or t <= cls.max_tau]

    @classmethod
    def prepare(cls, options: CodecOptions) -> None:
        """Fail early (NlicError) if the codec cannot run; called once before a bench starts."""
        return None


#: registry: codec name -> adapter class (insertion order = table order)
CODECS: dict[str, type[Codec]] = {}


def register_codec(cls: type[Codec]) -> type[Codec]:
    """Class decorator adding an adapter to :data:`CODECS` under ``cls.name``."""
    CODECS[cls.name] = cls
    return cls


def get_codec(name: str) -> type[Codec]:
    try:
        return CODECS[name]
    except KeyError:
        raise NlicError(f"unknown codec {name!r}; known: {', '.join(CODECS)}") from None


def _rgb(array: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(array))


@register_codec
class PngCodec(Codec):
    """PNG via Pillow with ``optimize=True`` (zlib level 9, adaptive filters).

    Pillow is used rather than ``imagecodecs.png_encode``: libpng's best setting (level 9,
    all filters, Z_FILTERED) is ~0.4 % larger on our sample set.
    """

    name = "png"
    label = "PNG"

    def encode(self, image: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        return _rgb(imagecodecs.png_decode(data))


@register_codec
class WebpCodec(Codec):
    """WebP lossless, slowest/best settings (``level=100, method=6``)."""

    name = "webp"
    label = "WebP lossless"

    def encode(self, image: np.ndarray) -> bytes:
        return bytes(imagecodecs.webp_encode(image, level=100, lossless=True, method=6))

    def decode(self, data: bytes) -> np.ndarray:
        return _rgb(imagecodecs.webp_decode(data))


@register_codec
class JpegXlCodec(Codec):
    """JPEG XL lossless (libjxl) at ``--jxl-effort``."""

    name = "jpegxl"
    label = "JPEG XL lossless"

    def encode(self, image: np.ndarray) -> bytes:
        return bytes(imagecodecs.jpegxl_encode(image, lossless=True, effort=self.options.jxl_effort))

    def decode(self, data: bytes) -> np.ndarray:
        return _rgb(imagecodecs.jpegxl_decode(data))


@register_codec
class Jpeg2000Codec(Codec):
    """JPEG 2000 lossless (OpenJPEG, reversible 5/3 wavelet + RCT)."""

    name = "jpeg2000"
    label = "JPEG 2000 lossless"

    def encode(self, image: np.ndarray) -> bytes:
        return bytes(imagecodecs.jpeg2k_encode(image, reversible=True))

    def decode(self, data: bytes) -> np.ndarray:
        return _rgb(imagecodecs.jpeg2k_decode(data))


@register_codec
class JpegLsCodec(Codec):
    """JPEG-LS (CharLS): lossless at tau=0, near-lossless NEAR=tau otherwise, no colour transform."""

    name = "jpegls"
    label = "JPEG-LS"
    max_tau = JPEGLS_MAX_NEAR

    def encode(self, image: np.ndarray) -> bytes:
        return bytes(imagecodecs.jpegls_encode(image, level=self.tau))

    def decode(self, data: bytes) -> np.ndarray:
        return _rgb(imagecodecs.jpegls_decode(data))


@register_codec
class JpegXlLossyCodec(Codec):
    """JPEG XL lossy (VarDCT) at small Butteraugli distances: a reference WITHOUT an error bound."""

    name = "jpegxl-lossy"
    label = "JPEG XL lossy (no bound)"
    bounded = False
    default_distances = (0.1, 0.3, 0.5, 1.0)

    def encode(self, image: np.ndarray) -> bytes:
        return bytes(imagecodecs.jpegxl_encode(image, distance=self.setting.distance, effort=self.options.jxl_effort))

    def decode(self, data: bytes) -> np.ndarray:
        return _rgb(imagecodecs.jpegxl_decode(data))


#: loaded nlic file codecs, by model path and whether only learned tiles are kept (loaded once per process)
_NLIC_MODELS: dict[tuple[str | None, bool], Any] = {}


def _demo_photo(gray: bool) -> np.ndarray:
    """The package's demo photo, grey or RGB, read as the bench reads its images (what
    :meth:`nlic.api.Codec.warm_up` codes before the first timed image)."""
    from nlic.data.crops import to_gray
    from nlic.data.images import DEMO_IMAGE, load_rgb

    pixels = load_rgb(DEMO_IMAGE)
    return to_gray(pixels) if gray else pixels


def _load_nlic(model: str | None, learned_only: bool = False) -> Any:
    if (model, learned_only) not in _NLIC_MODELS:
        try:
            from nlic.api import load_codec  # lazy: the bench must work without the model stack
        except ImportError as err:
            raise NlicError(f"codec 'nlic' is unavailable ({err}); leave it out of --codecs") from err
        if model is not None and not Path(model).exists():
            raise NlicError(f"model checkpoint not found: {model}")
        noted = any(m == model for m, _ in _NLIC_MODELS)  # (said once per model)
        codec = _NLIC_MODELS[model, learned_only] = load_codec(model, stored_fallback=not learned_only)
        if not noted and not codec.image_codec.model.residual.has_gray_heads:
            from nlic.model_io import NO_GREY_HEADS

            print(f"note: model {model} {NO_GREY_HEADS}", file=sys.stderr)
    return _NLIC_MODELS[model, learned_only]


@register_codec
class NlicCodec(Codec):
    """The learned near-lossless codec (``nlic.api.load_codec``), run in the main process."""

    name = "nlic"
    label = "nlic (file codec: learned tiles, stored fallback, JPEG XL where smaller)"
    max_tau = None
    in_process = True
    #: keep the learned code of every tile (no stored PNG / uniform / JPEG XL tile)
    learned_only: ClassVar[bool] = False

    @classmethod
    def prepare(cls, options: CodecOptions) -> None:
        _load_nlic(options.model, cls.learned_only).warm_up(_demo_photo(options.gray))

    def encode(self, image: np.ndarray) -> bytes:
        # a writable copy: torch.from_numpy warns on the runner's read-only arrays
        return _load_nlic(self.options.model, self.learned_only).compress(np.array(image), self.tau).data

    def decode(self, data: bytes) -> np.ndarray:
        return _rgb(_load_nlic(self.options.model, self.learned_only).decompress(data).pixels)


@register_codec
class NlicLearnedCodec(NlicCodec):
    """nlic with the learned code kept in every tile: the model alone, without the stored fallback's
    PNG, uniform and JPEG XL tiles (``nlic compress --learned-only``)."""

    name = "nlic-learned"
    label = "nlic (the learned code of every tile)"
    learned_only = True
