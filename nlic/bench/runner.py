"""Running a benchmark: plan (image, codec, setting) tasks, encode/decode/verify each, collect rows.

Every decoded image is checked against its codec's bound: identical at tau=0, ``max |x - x_hat|
<= tau`` otherwise.  A broken bound is recorded as ``bound_ok = False`` in its row, never averaged
away.  Unbounded codecs (``jpegxl-lossy``) get ``tau = None``, their ``distance`` and
``bound_ok = None``; a codec that raises gets ``error`` set and ``bound_ok = None``.

Classic codecs may run in ``jobs`` worker processes; in-process codecs (nlic) always run in the
main process, overlapping with the workers.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nlic.bench.codecs import CodecOptions, Setting, get_codec
from nlic.errors import NlicError
from nlic.io import read_image

#: file suffixes ``nlic bench`` reads from a folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class BenchRow:
    """One (codec, setting, image) measurement; :meth:`to_json` gives the results.json record.

    ``psnr`` is ``inf`` for an exact reconstruction; in JSON it is written as ``null`` (JSON has no
    infinity), so ``psnr: null`` with ``max_err: 0`` means lossless.
    """

    codec: str
    tau: int | None
    image: str
    width: int
    height: int
    bytes: int | None = None
    bpp: float | None = None
    psnr: float | None = None
    max_err: int | None = None
    enc_s: float | None = None
    dec_s: float | None = None
    bound_ok: bool | None = None
    distance: float | None = None
    error: str | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        if d["psnr"] is not None and math.isinf(d["psnr"]):
            d["psnr"] = None
        return d


@dataclass(frozen=True)
class Task:
    """One unit of work: encode + decode + verify ``image`` with ``codec`` at ``setting``."""

    codec: str
    setting: Setting
    image: str


def find_images(folder: str | Path) -> tuple[list[Path], list[str]]:
    """Image files of ``folder`` (non-recursive, sorted) and warnings for skipped files.

    A single image file is accepted too.  Raises :class:`NlicError` for a missing folder.
    """
    root = Path(folder)
    if root.is_file():
        return [root], []
    if not root.is_dir():
        raise NlicError(f"image folder not found: {root}")
    images, warnings = [], []
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        else:
            warnings.append(f"skipping {path.name}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
    return images, warnings


@functools.lru_cache(maxsize=4)
def load_rgb(path: str) -> np.ndarray:
    """Read an image as a read-only ``H x W x 3`` uint8 array (grey is replicated, alpha dropped)."""
    pixels = read_image(path).rgb()
    pixels.flags.writeable = False  # a codec must not modify its input
    return pixels


def check_bound(original: np.ndarray, decoded: np.ndarray, tau: int) -> tuple[int, bool]:
    """``(max abs error, bound_ok)``: exact at tau=0, ``max_err <= tau`` otherwise."""
    max_err = int(np.abs(original.astype(np.int16) - decoded.astype(np.int16)).max())
    return max_err, max_err <= tau


def psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB over all samples (peak 255); ``inf`` if identical."""
    mse = float(np.mean((original.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


@functools.lru_cache(maxsize=4)
def load_gray(path: str) -> np.ndarray:
    """The grey version of :func:`load_rgb` (``H x W`` uint8, read-only)."""
    from nlic.data.datamodule import to_gray

    pixels = to_gray(load_rgb(path))
    pixels.flags.writeable = False
    return pixels


def run_task(task: Task, options: CodecOptions) -> BenchRow:
    """Encode, decode and verify one image; exceptions become a row with ``error`` set."""
    image = load_gray(task.image) if options.gray else load_rgb(task.image)
    h, w = image.shape[:2]
    cls = get_codec(task.codec)
    row = BenchRow(
        codec=task.codec, tau=task.setting.tau, distance=task.setting.distance,
        image=Path(task.image).name, width=w, height=h,
    )  # fmt: skip
    try:
        codec = cls(task.setting, options)
        t0 = time.perf_counter()
        data = codec.encode(image)
        t1 = time.perf_counter()
        decoded = np.asarray(codec.decode(data))
        t2 = time.perf_counter()
    except Exception as err:  # noqa: BLE001 - one failing codec must not end the benchmark
        row.error = f"{type(err).__name__}: {' '.join(str(err).split())}"[:300]
        return row
    row.bytes, row.enc_s, row.dec_s = len(data), t1 - t0, t2 - t1
    row.bpp = 8.0 * len(data) / (h * w)
    if image.ndim == 2 and decoded.ndim == 3 and decoded.shape[2] == 1:  # grey decoded as H x W x 1
        decoded = decoded[..., 0]
    if decoded.shape != image.shape or decoded.dtype != np.uint8:
        row.error = f"decoded {decoded.dtype} {decoded.shape}, expected uint8 {image.shape}"
        row.bound_ok = False if cls.bounded else None
        return row
    row.psnr = psnr(image, decoded)
    row.max_err, ok = check_bound(image, decoded, row.tau or 0)
    row.bound_ok = ok if cls.bounded else None
    return row


def plan(
    images: Sequence[str | Path],
    codecs: Sequence[str],
    taus: Sequence[int],
    distances: Sequence[float] | None,
    options: CodecOptions,
) -> tuple[list[Task], list[str]]:
    """All tasks of a run and notes about requested taus a codec cannot run.

    Calls each codec's ``prepare`` first, so an unusable codec (e.g. nlic without a model) fails
    before any work is done.
    """
    tasks, notes = [], []
    for name in codecs:
        cls = get_codec(name)
        cls.prepare(options)
        settings = cls.settings(taus, distances, options)
        if cls.bounded and cls.max_tau != 0:
            dropped = sorted(set(taus) - {s.tau for s in settings})
            if dropped:
                notes.append(f"{name}: tau {', '.join(map(str, dropped))} not supported, skipped")
        tasks += [Task(name, s, str(img)) for s in settings for img in images]
    return tasks, notes


def _sort_key(codecs: Sequence[str], images: Sequence[str]) -> Callable[[BenchRow], tuple]:
    order = {c: i for i, c in enumerate(codecs)}
    img_order = {Path(p).name: i for i, p in enumerate(images)}
    return lambda r: (
        order.get(r.codec, len(order)),
        r.tau or 0,
        r.distance or 0.0,
        img_order.get(r.image, 0),
    )


def _mp_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def run_bench(
    tasks: Sequence[Task],
    options: CodecOptions,
    jobs: int = 1,
    on_row: Callable[[BenchRow], None] | None = None,
) -> list[BenchRow]:
    """Run ``tasks`` (classic codecs in ``jobs`` processes if > 1) and return sorted rows.

    Worker processes import codecs from :data:`~nlic.bench.codecs.CODECS` afresh, so a codec
    registered at run time (not on import of ``nlic.bench.codecs``) needs ``jobs=1``.

    ``on_row`` is called in the main process after each finished task (progress, live warnings).
    """
    on_row = on_row or (lambda _r: None)
    in_main = [jobs <= 1 or get_codec(t.codec).in_process for t in tasks]
    local = [t for t, m in zip(tasks, in_main) if m]
    remote = sorted((t for t, m in zip(tasks, in_main) if not m), key=lambda t: t.image)  # reuse loads
    rows: list[BenchRow] = []

    def collect(done: set[Future]) -> None:
        for fut in done:
            rows.append(fut.result())
            on_row(rows[-1])

    if remote:
        workers = max(1, min(jobs, len(remote), os.cpu_count() or 1))
        # forkserver: workers never inherit the main process's threads (torch/OpenMP with nlic)
        with ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context()) as pool:
            pending = {pool.submit(run_task, t, options) for t in remote}
            try:
                for task in local:  # overlap in-process codecs with the workers
                    rows.append(run_task(task, options))
                    on_row(rows[-1])
                    done, pending = wait(pending, timeout=0, return_when=FIRST_COMPLETED)
                    collect(done)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    collect(done)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    else:
        for task in local:
            rows.append(run_task(task, options))
            on_row(rows[-1])
    codecs = list(dict.fromkeys(t.codec for t in tasks))
    images = list(dict.fromkeys(t.image for t in tasks))
    return sorted(rows, key=_sort_key(codecs, images))


def write_results_json(rows: Sequence[BenchRow], path: str | Path) -> Path:
    """Write the per-image rows as a JSON list (PSNR of exact reconstructions as ``null``)."""
    path = Path(path)
    path.write_text(json.dumps([r.to_json() for r in rows], indent=1) + "\n")
    return path
