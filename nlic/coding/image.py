"""Image <-> .nlic bytes: independent tiles, each learned (lossy latents + residual) or stored.

A tile is coded by the lossy layer (latents, decoded again so the residual is taken against what
the decoder will see), then its quantized residual by the integer residual network
(:mod:`nlic.coding.residual`); the stored fallback (:mod:`nlic.coding.fallback`) replaces it
whenever that is smaller.  At tau = 0 the whole image is also coded as JPEG XL lossless, on the
same threads as the tiles, and stored as one tile instead of them where it is smaller.  Grey images
are coded as one channel.
"""

from __future__ import annotations

import contextlib
import functools
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import imagecodecs
import numpy as np
import torch

from nlic.bitstream.container import (
    KIND_VERSION,
    LEARNED,
    LEARNED_KINDS,
    LEARNED_V3,
    LEARNED_V4,
    LEARNED_V5,
    LEARNED_V6,
    LEARNED_V7,
    LEARNED_V8,
    LEARNED_V9,
    LEARNED_V11,
    MAX_TILE,
    STORED_JXL,
    Container,
    TileChunk,
)
from nlic.coding import adaptation, fallback, grid, scale_fields
from nlic.coding.residual import Patches, ResidualCoder, TileStream
from nlic.entropy.pmf import SHARPNESS_STEPS
from nlic.entropy.range_coder import guard_latent_decoders
from nlic.errors import BitstreamError, NlicError
from nlic.model_io import LoadedModel
from nlic.residual.integer import ChannelParams, IntegerHead, head_key, integer_head
from nlic.residual.patches import PATCH, patchify, unpatchify
from nlic.residual.quantizer import bin_width, grid_offsets, quantize_residual, shift_grid
from nlic.system import lossy_to_uint8, pad_to_multiple

MAX_TAU = 255
MISMATCH_HINT = (
    "The file passed its integrity check, so the decoder computed something other than the encoder; "
    "with a lossy layer this can happen across hardware (its float decoder is not exact), or the file was "
    "crafted (no image was written)"
)
DEFAULT_TILE = 512
#: pixels of the tiles one thread decodes in lockstep: the joint buffers take ~250 bytes a pixel (a
#: 6 MP photo on 2 threads: 1 MP groups decoded 8 % faster than 0.5 MP ones, with 330 MiB more at peak)
LOCKSTEP_PIXELS = 2 * DEFAULT_TILE**2
#: the grey heads code a tile's R (formats 8, 9) when their estimate beats the colour heads' by this share
#: of R's bits: the decoder then runs them too (a second network pass over R)
GREY_RED_MIN_GAIN = 0.01
#: a pixel costs JPEG XL (effort 7) about a quarter of the learned code's encoding time: the whole-image
#: JPEG XL job is scheduled among the tiles by that share (the costliest jobs start first)
JXL_COST_RATIO = 4
#: the whole-image JPEG XL pass holds about 22 bytes a pixel (libjxl, effort 7: +171 MiB for 8.3 MP),
#: where the tiles hold a bounded amount whatever the image's size: larger images keep to the tiles
JXL_WHOLE_MAX_PIXELS = 16_000_000
#: at tau 0 on images of three tiles or more, the largest tiles up to this share of the image decide
#: early whether JPEG XL takes the whole image: where their learned code is JXL_PROBE_MARGIN times
#: their JPEG XL code, the other tiles are not coded (below JXL_PROBE_LEARNED_MARGIN times, the whole
#: image is not coded as JPEG XL).  On the 7 validation photos of three tiles or more
#: the probe's learned / JPEG XL ratios were 0.87-1.10, within 0.03 of the whole image's learned /
#: JPEG XL ratio (which is mostly the larger: one context tree for the image beats one a tile); the
#: photos above 1.02 are all ones whose whole JPEG XL code wins, the closest below (0.995) one it loses.
#: A margin of 1.02 instead of 1.03 stops early on one more photo (gcompris_bee, 1.028), same bytes
JXL_PROBE_SHARE = 1 / 3
JXL_PROBE_MARGIN = 1.02
#: where the probe's learned code is under this share of its JPEG XL code, the whole image is not coded as
#: JPEG XL (a fifth of a 2-thread encode at tau 0).  On 26 photos of three tiles or more (the validation
#: split and 16 training photos) the whole image's learned / JPEG XL ratio was at most 1.043 times the
#: probe's below 0.93 (0.698 -> 0.788, 0.863 -> 0.900, 0.875 -> 0.879), at most 1.025 times above it
JXL_PROBE_LEARNED_MARGIN = 0.93
T = TypeVar("T")


def _call(job: Callable[[], T]) -> T:
    return job()


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` (an error without a GPU) or ``auto`` (a GPU when there is one)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise NlicError("device cuda: no CUDA GPU is available to torch here (use --device cpu)")
    if not device.startswith(("cpu", "cuda")):
        raise NlicError(f"device must be cpu, cuda or auto, got {device!r}")
    return torch.device(device)


def check_tau(tau: int) -> int:
    if isinstance(tau, bool) or not isinstance(tau, (int, np.integer)):
        raise NlicError(f"tau must be an integer, got {tau!r}")
    if not 0 <= int(tau) <= MAX_TAU:
        raise NlicError(f"tau must be between 0 and {MAX_TAU}, got {tau}")
    return int(tau)


def _check_alpha_header(png: bytes, height: int, width: int) -> None:
    """The stored alpha PNG must be an 8-bit grayscale image of the header's size (read from IHDR)."""
    size = fallback.png_size(png)
    if size is None or len(png) < 33:
        raise BitstreamError("alpha plane cannot be decoded")
    if size != (height, width) or png[24] != 8 or png[25] != 0:
        raise BitstreamError("alpha plane does not match the image size")


@dataclass
class Compressed:
    """What :meth:`ImageCodec.compress` returns: the file's bytes and what went into them."""

    data: bytes
    height: int
    width: int
    mode: str
    tau: int
    parts: dict[str, int] = field(default_factory=dict)
    tile_kinds: dict[str, int] = field(default_factory=dict)
    encode_s: float = 0.0
    max_error: int = 0  # of the reconstruction the decoder will produce (<= tau)

    @property
    def bpp(self) -> float:
        return 8 * len(self.data) / (self.height * self.width)


@dataclass
class Decompressed:
    """What :meth:`ImageCodec.decompress` returns."""

    pixels: np.ndarray  # H x W x 3 (RGB) or H x W x 1 (grey), uint8
    alpha: np.ndarray | None
    mode: str
    decode_s: float = 0.0


@contextlib.contextmanager
def _lossy_step(lossy: torch.nn.Module, step: float | None) -> Iterator[None]:
    """Temporarily set the quantization step of a step-quantized lossy layer (lossy=flow)."""
    if step is None:
        yield
        return
    if not hasattr(lossy, "delta"):
        raise NlicError(f"lossy_step: this model's lossy codec ({type(lossy).__name__}) has no quantization step "
                        "(only step-quantized codecs such as lossy=flow do)")
    before = lossy.delta
    lossy.delta = float(step)
    try:
        yield
    finally:
        lossy.delta = before


class ImageCodec:
    """Compresses uint8 images with a loaded model (:func:`nlic.model_io.load_model`)."""

    def __init__(self, model: LoadedModel, tile: int = DEFAULT_TILE, stored_fallback: bool = True,
                 device: str = "cpu", threads: int | None = None, shift_grids: bool = True,
                 fit_scales: bool = True, patch_scales: bool = True) -> None:
        """``stored_fallback=False`` keeps the learned code of every tile even where the stored
        fallback is smaller (for studies and tests of the learned path).  ``device``: where the
        networks run (``cpu``, ``cuda``, ``auto``); files are the same bytes on every device.
        ``threads``: tiles coded at once on the CPU (default: torch's thread count); files are the
        same bytes whatever it is.  ``shift_grids=False`` keeps the lossy image's bin grid in every
        patch at tau >= 1 (:mod:`nlic.coding.grid`); ``fit_scales=False`` stores no log-scale offsets
        (:mod:`nlic.coding.scales`), ``patch_scales=False`` only the tile's (no per-patch deltas:
        format 3 files); with grids and scales off, files are format 2."""
        if tile % 64 or tile <= 0:
            raise ValueError("tile size must be a positive multiple of 64")
        self.stored_fallback = stored_fallback
        self.shift_grids = shift_grids
        self.fit_scales = fit_scales
        self.patch_scales = patch_scales
        #: the encoder may code a colour tile's R with the grey heads (formats 8, 9); False: never
        self.grey_red = True
        #: JPEG XL lossless may store the whole image (tried at tau 0) or a tile (where its PNG comes
        #: close to the learned code; format 10, see nlic.coding.fallback); False: never
        self.jxl_tiles = True
        self.device = resolve_device(device)
        self.loaded = model
        self.model = model.codec.eval().to(self.device)
        self.model_id = model.model_id
        self.tile = tile
        self._coders: dict[str, ResidualCoder] = {}
        self.threads = max(1, torch.get_num_threads() if threads is None else int(threads))
        guard_latent_decoders(self.model.lossy)  # corrupt latent strings must not crash CompressAI's decoder

    # ------------------------------------------------------------------ helpers
    def coder(self, tau: int, gray: bool = False) -> ResidualCoder:
        """The residual coder of ``tau`` for a colour or grey image (one integer head per head of
        the network, built once)."""
        net = self.model.residual
        key = head_key(tau, net, gray)
        if key not in self._coders:
            head: IntegerHead = integer_head(net, self.loaded.quantization, tau, self.model.lossy.residual_limit,
                                             gray)
            self._coders[key] = ResidualCoder(head.to(self.device), net.mask, net.kernel)
        return self._coders[key]

    def _map_tiles(self, fn: Callable[..., T], items: list[tuple], costs: list[int] | None = None,
                   first: set[int] | None = None, skip: Callable[[dict[int, T]], set[int]] | None = None,
                   spare: set[int] | None = None) -> list[T | None]:
        """``fn(*item)`` for every tile, results in order.  On the CPU, with a lossy layer that
        allows it, tiles run on ``self.threads`` threads with one torch thread each: a tile's
        wavefronts are too small for torch's own threads to pay, and the compiled PMF code and torch
        release the GIL.  ``costs``: each item's work (pixels); the costliest start first, so that
        the small tiles at the image's edges fill in at the end (the threads finish together).
        ``first``, ``skip``: the items of ``first`` start before the others, and once they are done
        ``skip(their results, by index)`` names the items not to run: their results are None.  It
        sees the same results whatever the thread count, so the files do not depend on it.
        ``spare``: items queued right behind ``first`` on threads (threads ``first`` would leave
        idle until its decision), their results dropped where ``skip`` names them: the same results
        as one thread gets, sooner."""
        order = sorted(range(len(items)), key=lambda i: -costs[i]) if costs is not None else list(range(len(items)))
        first = first or set()
        order = [i for i in order if i in first] + [i for i in order if i not in first]
        workers = min(self.threads, len(items))
        if workers <= 1 or self.device.type != "cpu" or not self.model.lossy.thread_safe:
            results: dict[int, T] = {}
            skipped: set[int] = set()
            for i in order:
                if i not in skipped:
                    results[i] = fn(*items[i])
                    if skip is not None and first and len(results) == len(first):
                        skipped = skip(results)
            return [results.get(i) for i in range(len(items))]

        def run(item: tuple) -> T:
            with torch.no_grad():  # grad mode is per thread
                return fn(*item)

        saved = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as pool:
                # the others are submitted after the decision: once started, a tile could not be stopped
                decide = skip is not None and bool(first)
                futures = {i: pool.submit(run, items[i]) for i in order if i in first or not decide}
                skipped = set()
                if decide:
                    futures.update({i: pool.submit(run, items[i]) for i in order if i in (spare or ())})
                    skipped = skip({i: futures[i].result() for i in first})
                    for i in skipped & futures.keys():
                        futures[i].cancel()  # (where it has started, it ends unused)
                    futures.update({i: pool.submit(run, items[i]) for i in order
                                    if i not in futures and i not in skipped})
                return [None if i in skipped else futures[i].result() for i in range(len(items))]
        finally:
            torch.set_num_threads(saved)

    @staticmethod
    def _tiles(height: int, width: int, tile: int):
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                yield y, x, min(tile, height - y), min(tile, width - x)

    def _patches(self, x_hat: torch.Tensor, features: torch.Tensor | None, h: int, w: int, tau: int,
                 channels: int, head: IntegerHead, clamped: bool = False) -> Patches:
        """Feasible bins, valid pixels and integer features of a padded tile, as patches
        (``clamped``: a format 3 tile, whose network reads clamped residuals)."""
        wb = bin_width(tau)
        xh = x_hat[:, :channels]
        lo = torch.div(quantize_residual(-xh, tau), wb, rounding_mode="floor").long()
        hi = torch.div(quantize_residual(255.0 - xh, tau), wb, rounding_mode="floor").long()
        valid = torch.zeros(1, 1, *x_hat.shape[-2:])
        valid[..., :h, :w] = 1.0
        feats = None
        if features is not None and features.shape[1]:
            feats = head.quantize_features(patchify(features).permute(0, 2, 3, 1))
        limit = head.residual_limit if clamped else None
        return Patches(patchify(lo), patchify(hi), patchify(valid)[:, 0] > 0.5, feats, limit)

    @staticmethod
    def _shift_grid(x_hat: torch.Tensor, offsets: torch.Tensor, channels: int) -> torch.Tensor:
        """``x_hat`` ``[1, 3, H, W]`` with each patch's grid moved by ``offsets`` ``[P, channels]``."""
        out = x_hat.clone()
        out[:, :channels] = unpatchify(shift_grid(patchify(x_hat[:, :channels]), offsets), 1, *x_hat.shape[-2:])
        return out

    def _lossy_decode(self, payload) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.model.lossy.decompress_latents(payload)
        features = out.get("features")
        features = features.cpu() if features is not None and features.shape[1] else None
        return lossy_to_uint8(out["x_hat"].float()).cpu(), features

    # ------------------------------------------------------------------ encode
    @torch.no_grad()
    def compress(self, pixels: np.ndarray, tau: int, alpha: np.ndarray | None = None, adapt: bool = False,
                 lossy_step: float | None = None) -> Compressed:
        """Code ``pixels`` (``H x W x 3``, or grey ``H x W x 1`` / ``H x W``, uint8) so that every
        decoded sample is within ``tau``; ``alpha`` (``H x W`` uint8) is stored losslessly beside it.

        ``adapt`` re-fits the output layers to each tile; ``lossy_step`` sets the quantization step of a
        step-quantized lossy layer (stored in the file).
        """
        tau = check_tau(tau)
        if pixels.ndim == 2:
            pixels = pixels[..., None]
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
            raise NlicError(f"expected an H x W x 3 (or grayscale) uint8 image, got {pixels.dtype} {pixels.shape}")
        if not pixels.flags.writeable:  # (np.asarray of a PIL image): torch warns on every tile it wraps
            pixels = pixels.copy()
        mode = ("L" if pixels.shape[2] == 1 else "RGB") + ("A" if alpha is not None else "")
        extras = b""
        if alpha is not None:
            if alpha.shape != pixels.shape[:2] or alpha.dtype != np.uint8:
                raise NlicError("alpha must be an H x W uint8 plane matching the image")
            extras = imagecodecs.png_encode(np.ascontiguousarray(alpha))
        t0 = time.perf_counter()
        H, W, _ = pixels.shape
        recon = np.empty_like(pixels)
        tiles = list(self._tiles(H, W, self.tile))
        self.coder(tau, gray=pixels.shape[2] == 1)  # built once, before any thread needs it
        whole_jxl = (self.jxl_tiles and self.stored_fallback and tau == 0 and max(H, W) <= MAX_TILE
                     and H * W <= JXL_WHOLE_MAX_PIXELS)
        # a tile that is the whole image is not tried as JPEG XL again: the whole-image job codes the same samples
        tile_jxl = not (whole_jxl and len(tiles) == 1)
        jobs = [functools.partial(self._encode_tile, np.ascontiguousarray(pixels[y : y + h, x : x + w]), tau, adapt,
                                  tile_jxl) for y, x, h, w in tiles]
        costs = [h * w for _, _, h, w in tiles]
        first, skip, spare = None, None, None
        if whole_jxl:  # the whole image as JPEG XL, beside the tiles on the same threads
            jobs.append(functools.partial(fallback.jxl_encode, pixels))
            costs.append(H * W // JXL_COST_RATIO)
            if len(tiles) >= 3:
                first, skip = self._jxl_probe(pixels, tiles, jobs, costs)
                # fewer probe tiles than threads: the whole image's JPEG XL code starts on a thread
                # they leave idle, before the decision that may drop it (one probe tile in four tiles)
                spare = {len(tiles)} if sum(i < len(tiles) for i in first) < self.threads else None
        with _lossy_step(self.model.lossy, lossy_step):
            done = self._map_tiles(_call, [(job,) for job in jobs], costs, first, skip, spare)
        tile = self.tile
        skipped = any(result is None for result in done[: len(tiles)])  # the probe chose JPEG XL
        if not skipped:
            chunks = [chunk for chunk, _ in done[: len(tiles)]]
            for (y, x, h, w), (_, rec) in zip(tiles, done):
                recon[y : y + h, x : x + w] = rec
        if whole_jxl and done[len(tiles)] is not None:  # (None: the probe chose the learned code)
            joined = TileChunk(STORED_JXL, stored=done[len(tiles)])
            if skipped or len(joined.pack()) < sum(len(chunk.pack()) for chunk in chunks):
                # the image as one JPEG XL tile covering it (at tau 0 its samples are the reconstruction)
                chunks, tile = [joined], max(self.tile, -(-max(H, W) // 64) * 64)
                recon[:] = pixels
        # the lowest format the tiles need (older readers keep reading what they can)
        version = max(KIND_VERSION[chunk.kind] for chunk in chunks)
        container = Container(H, W, tau, tile, self.model_id, zlib.crc32(recon.tobytes()), mode, chunks, extras,
                              version)
        data = container.to_bytes()
        max_error = int(np.abs(recon.astype(np.int16) - pixels.astype(np.int16)).max())
        if max_error > tau:  # the quantizer guarantees it; never write a file that breaks the bound
            raise RuntimeError(f"reconstruction error {max_error} exceeds tau {tau}")
        return Compressed(data, H, W, mode, tau, container.part_sizes(len(data)), container.tile_kinds(),
                          time.perf_counter() - t0, max_error)

    @staticmethod
    def _jxl_probe(pixels: np.ndarray, tiles: list[tuple[int, int, int, int]], jobs: list, costs: list[int],
                   ) -> tuple[set[int], Callable[[dict], set[int]]]:
        """An early choice between the whole image's JPEG XL code (``jobs[len(tiles)]``) and its
        learned tiles: the largest tiles up to JXL_PROBE_SHARE of the image are coded first, learned
        and as JPEG XL (jobs appended here).  Where their learned code takes more than
        JXL_PROBE_MARGIN times their JPEG XL code, the whole image is stored as JPEG XL and the other
        tiles are not coded; where it takes less than JXL_PROBE_LEARNED_MARGIN times, the whole
        image is not coded as JPEG XL.  (Against the whole image's JPEG XL bytes a pixel the probe
        misleads: a photo's content is not uniform.)"""
        n, H, W = len(tiles), *pixels.shape[:2]
        probe, area = [], 0
        for i in sorted(range(n), key=lambda i: -costs[i]):
            if area >= JXL_PROBE_SHARE * H * W:
                break
            y, x, h, w = tiles[i]
            probe.append((i, len(jobs)))
            jobs.append(functools.partial(fallback.jxl_encode, np.ascontiguousarray(pixels[y : y + h, x : x + w])))
            costs.append(h * w // JXL_COST_RATIO)
            area += h * w
        probed = {i for pair in probe for i in pair}

        def skip(results: dict) -> set[int]:
            learned = sum(len(results[i][0].pack()) for i, _ in probe)
            jxl = sum(len(results[j]) + 5 for _, j in probe)
            if learned > JXL_PROBE_MARGIN * jxl:
                return set(range(n)) - probed  # the other tiles
            if learned < JXL_PROBE_LEARNED_MARGIN * jxl:
                return {n}  # the whole image's JPEG XL code
            return set()

        return probed, skip

    def _encode_tile(self, pixels: np.ndarray, tau: int, adapt: bool,
                     jxl: bool = True) -> tuple[TileChunk, np.ndarray]:
        """A tile's learned code, or its stored code where smaller (``jxl``: JPEG XL among the
        stored codes, as :attr:`jxl_tiles` allows)."""
        learned = self._encode_learned(pixels, tau, adapt)
        if not self.stored_fallback:
            return learned
        learned_size = len(learned[0].pack())
        kind, stored, stored_rec = fallback.encode(pixels, tau, beat=learned_size, jxl=self.jxl_tiles and jxl)
        if learned_size <= len(stored) + 5:
            return learned
        return TileChunk(kind, stored=stored), stored_rec

    def _encode_learned(self, pixels: np.ndarray, tau: int, adapt: bool) -> tuple[TileChunk, np.ndarray]:
        h, w, channels = pixels.shape
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float().expand(-1, 3, -1, -1)  # grey: replicated
        xp = pad_to_multiple(x, self.model.pad_multiple)
        lossy = self.model.lossy
        payload = lossy.compress_latents((xp / 255.0).to(self.device))
        latents = lossy.payload_to_bytes(payload)
        # decode our own latents: the residual is taken against exactly what the decoder sees
        x_hat, features = self._lossy_decode(lossy.payload_from_bytes(latents, *xp.shape[-2:]))
        coder = self.coder(tau, gray=channels == 1)
        offsets = None
        if tau > 0 and self.shift_grids:  # (all-zero offsets too: such tiles clamp the context, see Patches)
            offsets = grid_offsets(patchify(xp[:, :channels]), patchify(x_hat[:, :channels]), tau)
            x_hat = self._shift_grid(x_hat, offsets, channels)
        # format 3 tiles clamp the context (a no-op at tau 0, where residuals stay within the limit)
        format3 = offsets is not None or tau == 0
        patches = self._patches(x_hat, features, h, w, tau, channels, coder.head, clamped=format3)
        r_hat = quantize_residual(xp[:, :channels] - x_hat[:, :channels], tau)
        bins = patchify(torch.div(r_hat, bin_width(tau), rounding_mode="floor").long()) * patches.valid[:, None]
        fit_scales = format3 and self.fit_scales
        no_fit = [None] * channels

        def shared(params: list) -> tuple[list, list, bool]:  # the shared layers, R from the grey heads where they pay
            red = self._grey_red(params, x_hat, features, h, w, tau, bins, format3) if fit_scales else None
            return (no_fit, params, False) if red is None else (no_fit, [red, *params[1:]], True)

        if adapt:
            inputs = coder.analyse(bins, patches, tau)
            deltas = self._adapt(coder.head, inputs, bins, patches, tau)
            layers = [None if d is None else adaptation.adapted_layer(coder.head.channel_out[c], d,
                                                                      coder.head.output_limits(c))
                      for c, d in enumerate(deltas)]
            candidates = [shared(coder.mixtures(inputs, no_fit))]
            if any(d is not None for d in deltas):  # the fit was made without scale offsets: kept if it still pays
                candidates.insert(0, (deltas, coder.mixtures(inputs, layers), False))
        else:
            candidates = [shared(coder.whole_mixtures(bins, patches, tau))]
        rec = torch.clamp(x_hat[:, :channels] + r_hat, 0, 255)[0, :, :h, :w].permute(1, 2, 0).to(torch.uint8).numpy()
        chunks = [self._learned_chunk(coder, params, deltas, bins, patches, tau, latents, offsets, fit_scales, grey)
                  for deltas, params, grey in candidates]
        return min(chunks, key=lambda chunk: len(chunk.pack())), rec  # the real sizes decide (first on a tie)

    def _learned_chunk(self, coder: ResidualCoder, params: list, deltas: list, bins: torch.Tensor, patches: Patches,
                       tau: int, latents: bytes, offsets: torch.Tensor | None, fit_scales: bool,
                       grey_red: bool = False) -> TileChunk:
        """A learned tile coded under ``params`` (output-layer ``deltas`` stored beside them), with
        its scale offsets fitted when ``fit_scales`` and its grid ``offsets`` (None: none);
        ``grey_red``: R's mixtures in ``params`` are the grey heads' (a format 8 tile, or format 9's flag)."""
        context = coder.symbol_context(params, bins, patches, tau) if fit_scales and self.patch_scales else None
        choice = coder.scale_offsets(params, bins, patches, tau, self.patch_scales, context) if fit_scales else None
        if (choice is not None and choice.deltas is not None and not choice.deltas.any() and choice.classes is None
                and choice.means is None and all(s == SHARPNESS_STEPS for s in choice.channel_sharpness())
                and choice.phases is None and not grey_red):
            choice.deltas = choice.sharpness = None  # one offset per tile, neutral mixtures: a format 3 tile
        per_patch = None if choice is None else choice.per_patch(bins.shape[0])
        stream = coder.encode(params, bins, patches, tau, per_patch, None if choice is None else choice.sharpness,
                              None if choice is None else choice.classes, None if choice is None else choice.means,
                              context, None if choice is None else choice.phases)
        neutral = choice is None or (choice.deltas is None and not any(choice.tile))  # (format 3 normalised above)
        if offsets is None and neutral:  # no grid, no offsets, neutral mixtures: a format 2 tile
            return TileChunk(LEARNED, latents, adaptation.pack(deltas), stream)
        kind = (LEARNED_V3 if choice is None or choice.deltas is None
                else LEARNED_V11 if choice.phases is not None
                else LEARNED_V9 if choice.fine
                else LEARNED_V8 if grey_red
                else LEARNED_V7 if choice.chroma else LEARNED_V6 if choice.means is not None
                else LEARNED_V4 if choice.classes is None else LEARNED_V5)
        return TileChunk(kind, latents,
                         adaptation.pack(deltas), stream, grid=b"" if offsets is None else grid.pack(offsets, tau),
                         scales=b"" if choice is None else choice.pack(every_source=grey_red, grey_red=grey_red))

    def _grey_red(self, params: list, x_hat: torch.Tensor, features: torch.Tensor | None, h: int, w: int, tau: int,
                  bins: torch.Tensor, clamped: bool) -> ChannelParams | None:
        """R's mixtures from the grey heads reading the R plane alone, where they beat the colour
        heads' on the tile's sample (None otherwise, and for grey images, models without grey heads,
        lossy layers with features and the encoder's ``grey_red`` switch off).  Trained on noisy
        colour crops, the colour heads are blunt on smooth red planes, which the grey heads, trained
        on grey crops, code in up to 16 % fewer bits."""
        if (len(params) != 3 or not self.grey_red or not self.patch_scales or features is not None
                or not self.model.residual.has_gray_heads):
            return None
        grey = self.coder(tau, gray=True)
        red_patches = self._patches(x_hat, features, h, w, tau, 1, grey.head, clamped=clamped)
        if not grey.grey_red_pays(params[0], bins[:, :1], red_patches, tau, GREY_RED_MIN_GAIN):
            return None
        return grey.whole_mixtures(bins[:, :1], red_patches, tau)[0]

    @staticmethod
    def _adapt(head: IntegerHead, inputs: list, bins: torch.Tensor, patches: Patches, tau: int) -> list:
        """Output-layer deltas per channel fitted on a fixed sample of the tile (None: not worth it)."""
        index = torch.nonzero(patches.valid.flatten())[:, 0]
        count = len(index)
        if count > adaptation.SAMPLES:
            index = index[torch.randperm(count, generator=torch.Generator().manual_seed(0))[: adaptation.SAMPLES]]
        out = []
        for c, blocks in enumerate(inputs):
            sample = [t.flatten(0, -2)[index].cpu() for t in blocks]
            take = (lambda t, c=c: t[:, c].reshape(-1)[index])  # noqa: E731
            out.append(adaptation.fit(head, c, sample, take(bins), take(patches.lo), take(patches.hi), tau, count))
        return out

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decompress(self, data: bytes) -> Decompressed:
        """Decode a .nlic file's bytes (every sample within the file's tau of the original)."""
        t0 = time.perf_counter()
        c = Container.from_bytes(data)
        if c.model_id != self.model_id:
            raise BitstreamError(
                f"file was encoded with model {c.model_id.hex()}, but the loaded model is "
                f"{self.model_id.hex()}; decode it with the model that encoded it (--model)"
            )
        if c.extras and not c.mode.endswith("A"):
            raise BitstreamError(f"unexpected extra data in a file of mode {c.mode}")
        if c.mode.endswith("A"):
            _check_alpha_header(c.extras, c.height, c.width)  # before png_decode allocates anything
        channels = 1 if c.mode.startswith("L") else 3
        out = np.empty((c.height, c.width, channels), dtype=np.uint8)
        # the file's tile size, not this codec's: files coded with any --tile decode
        tiles = list(self._tiles(c.height, c.width, c.tile))
        if any(chunk.kind in LEARNED_KINDS for chunk in c.tiles):
            self.coder(c.tau, gray=channels == 1)  # built once, before any thread needs it
        items = [_TileItem(i, chunk, h, w) for i, ((_, _, h, w), chunk) in enumerate(zip(tiles, c.tiles))]
        groups = [[t] for t in items if t.chunk.kind not in LEARNED_KINDS]
        groups += self._lockstep_groups([t for t in items if t.chunk.kind in LEARNED_KINDS])
        decoded_groups = self._map_tiles(self._decode_group, [(g, channels, c.tau) for g in groups],
                                         [sum(t.area for t in g) for g in groups])
        for group, decoded in zip(groups, decoded_groups):
            for item, tile in zip(group, decoded):
                y, x, h, w = tiles[item.index]
                out[y : y + h, x : x + w] = tile
        alpha = None
        if c.mode.endswith("A"):
            try:
                alpha = np.asarray(imagecodecs.png_decode(c.extras), dtype=np.uint8)
            except Exception:
                raise BitstreamError("alpha plane cannot be decoded") from None
            if alpha.shape != (c.height, c.width):
                raise BitstreamError("alpha plane does not match the image size")
        if zlib.crc32(out.tobytes()) != c.recon_crc:
            raise BitstreamError("decoded image does not match the encoder's reconstruction (checksum mismatch). "
                                 + MISMATCH_HINT)
        return Decompressed(out, alpha, c.mode, time.perf_counter() - t0)

    def _lockstep_groups(self, tiles: list[_TileItem]) -> list[list[_TileItem]]:
        """Learned tiles in groups decoded in lockstep: tiles that share the context clamp (format 2
        tiles apart from later ones), at least one group per worker thread and at most
        LOCKSTEP_PIXELS a group, balanced by area (largest first, into the lightest group); a tile
        with adapted output layers alone."""
        workers = self.threads if self.device.type == "cpu" else 1
        groups = [[t] for t in tiles if t.chunk.adapt]
        for clamped in (False, True):
            members = sorted((t for t in tiles if (t.chunk.kind != LEARNED) == clamped and not t.chunk.adapt),
                             key=lambda t: -t.area)
            if not members:
                continue
            count = max(workers, -(-sum(t.area for t in members) // LOCKSTEP_PIXELS))
            bins: list[list[_TileItem]] = [[] for _ in range(min(count, len(members)))]
            load = [0] * len(bins)
            for t in members:
                lightest = load.index(min(load))
                bins[lightest].append(t)
                load[lightest] += t.area
            groups += [sorted(b, key=lambda t: t.index) for b in bins]
        return groups

    def _decode_group(self, items: list[_TileItem], channels: int, tau: int) -> list[np.ndarray]:
        """The tiles of a group: a stored tile alone, learned ones with their residuals decoded
        together (:meth:`ResidualCoder.decode_tiles`); each prepared here, so a worker holds only its
        group's buffers."""
        if items[0].chunk.kind not in LEARNED_KINDS:
            return [fallback.decode(t.chunk.kind, t.chunk.stored, (t.height, t.width, channels), tau) for t in items]
        pending = [self._prepare_tile(t.chunk, t.height, t.width, channels, tau) for t in items]
        coder = self.coder(tau, gray=channels == 1)
        try:
            red = self.coder(tau, gray=True).head if any(t.stream.grey_red for t in pending) else None
            bins = coder.decode_tiles([t.stream for t in pending], tau, red)
        except BitstreamError as err:
            # the container's CRC already passed: the bytes are what the encoder wrote
            raise BitstreamError(f"{err}. {MISMATCH_HINT}") from None
        out = []
        for tile, b in zip(pending, bins):
            hp, wp = tile.x_hat.shape[-2:]
            r_hat = unpatchify(b, 1, hp, wp).float() * bin_width(tau)
            rec = torch.clamp(tile.x_hat + r_hat, 0, 255)[0, :, : tile.height, : tile.width].permute(1, 2, 0)
            out.append(rec.to(torch.uint8).numpy())
        return out

    def _prepare_tile(self, chunk: TileChunk, h: int, w: int, channels: int, tau: int) -> _PendingTile:
        """What the residual decoder needs of a learned tile: its lossy image, patches and stream."""
        m = self.model.pad_multiple
        hp, wp = -(-h // m) * m, -(-w // m) * m
        payload = self.model.lossy.payload_from_bytes(chunk.latents, hp, wp)
        try:
            x_hat, features = self._lossy_decode(payload)
        except Exception as err:
            raise BitstreamError(f"latent stream cannot be decoded ({type(err).__name__})") from None
        if tuple(x_hat.shape[-2:]) != (hp, wp):
            raise BitstreamError("latent shape does not match the image size in the header")
        coder = self.coder(tau, gray=channels == 1)
        layers = adaptation.unpack(chunk.adapt, coder.head, channels)
        format3 = chunk.kind in LEARNED_KINDS and chunk.kind != LEARNED  # (formats 3 to 9)
        if chunk.grid:
            if tau == 0:
                raise BitstreamError("file is corrupt (grid offsets in a lossless tile)")
            offsets = grid.unpack(chunk.grid, ((hp // PATCH) * (wp // PATCH), channels), tau)
            x_hat = self._shift_grid(x_hat, offsets, channels)
        n_patches = (hp // PATCH) * (wp // PATCH)
        sharpness = class_offsets = mean_offsets = coefficients = None
        grey_red = chunk.kind == LEARNED_V8
        phases = None
        if chunk.kind in (LEARNED_V9, LEARNED_V11):
            field = scale_fields.unpack_fine(chunk.scales, n_patches, channels, phases=chunk.kind == LEARNED_V11)
            phases = field.phases
            log_scales, sharpness = field.per_patch, field.sharpness
            class_offsets, mean_offsets = field.classes, field.means
            grey_red, coefficients = field.grey_red, field.least_squares
        elif chunk.kind in (LEARNED_V5, LEARNED_V6, LEARNED_V7, LEARNED_V8):
            log_scales, sharpness, class_offsets, mean_offsets = scale_fields.unpack_classes(
                chunk.scales, n_patches, channels, means=chunk.kind != LEARNED_V5,
                chroma=chunk.kind in (LEARNED_V7, LEARNED_V8))
        elif chunk.kind == LEARNED_V4:
            log_scales, sharpness = scale_fields.unpack_patches(chunk.scales, n_patches, channels)
        else:
            stored = scale_fields.unpack(chunk.scales, channels)
            log_scales = scale_fields.ScaleChoice(stored, None).per_patch(n_patches)
        patches = self._patches(x_hat, features, h, w, tau, channels, coder.head, clamped=format3)
        stream = TileStream(chunk.residual, patches, layers, log_scales, sharpness, class_offsets, mean_offsets,
                            grey_red=grey_red, fine=chunk.kind in (LEARNED_V9, LEARNED_V11),
                            least_squares=coefficients if coefficients is not None and coefficients.any() else None,
                            phases=phases)
        return _PendingTile(x_hat[:, :channels], stream, h, w)


@dataclass
class _TileItem:
    """A tile of a file to decode: its position in the file, chunk and size."""

    index: int
    chunk: TileChunk
    height: int
    width: int

    @property
    def area(self) -> int:
        return self.height * self.width


@dataclass
class _PendingTile:
    """A learned tile between its lossy image and its residuals: ``x_hat`` ``[1, c, Hp, Wp]`` (grid
    shifted), its stream for the residual decoder, its size in the image."""

    x_hat: torch.Tensor
    stream: TileStream
    height: int
    width: int
