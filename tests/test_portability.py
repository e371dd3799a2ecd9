"""Files decode exactly on another machine: other thread counts, other SIMD kernels.

Each encode and decode runs in a fresh process with its own ``OMP_NUM_THREADS`` and
``ATEN_CPU_CAPABILITY`` (torch's switch between its portable kernels and this CPU's best SIMD
ones), exactly as a file made on one machine is opened on another.  The encoders must write the
same bytes, and every decoder must reproduce the image exactly.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: (threads, ATEN_CPU_CAPABILITY or None for the machine's best) of the encoders and the decoders:
#: every thread count and both kernel sets appear on each side, never paired with themselves
ENCODERS = [(1, None), (2, "default"), (4, None)]
DECODERS = [(1, "default"), (2, None), (4, "default")]


def _run(args: list[str], threads: int, isa: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if isa is not None:
        env["ATEN_CPU_CAPABILITY"] = isa
    return subprocess.run([sys.executable, "-m", "nlic.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def photo_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real photo of 0.45 MP (a fundus photograph bundled with scikit-image)."""
    from skimage import data

    path = tmp_path_factory.mktemp("portable") / "retina.png"
    Image.fromarray(np.ascontiguousarray(data.retina()[360:1000, 300:1004])).save(path)
    return path


@pytest.mark.parametrize("tau, flags", [(0, ["--no-jxl-tiles"]), (0, []), (2, [])],
                         ids=["tau0-learned", "tau0-default", "tau2"])
def test_files_are_identical_and_exact_across_threads_and_kernels(photo_png: Path, tmp_path: Path, tau: int,
                                                                   flags: list[str]) -> None:
    """At tau 0 this photo is stored as JPEG XL by default (its whole-image code is smaller), so the
    learned path is tested with ``--no-jxl-tiles`` as well."""
    files = []
    for i, (threads, isa) in enumerate(ENCODERS):
        out = tmp_path / f"enc{i}.nlic"
        enc = _run(["compress", str(photo_png), str(out), "--tau", str(tau), *flags], threads, isa)
        assert enc.returncode == 0, enc.stderr
        files.append(out.read_bytes())
    assert all(f == files[0] for f in files), "encoders with other threads / kernels wrote other bytes"
    original = np.asarray(Image.open(photo_png)).astype(np.int16)
    for i, (threads, isa) in enumerate(DECODERS):
        restored = tmp_path / f"dec{i}.png"
        dec = _run(["decompress", str(tmp_path / "enc0.nlic"), str(restored)], threads, isa)
        assert dec.returncode == 0, (threads, isa, dec.stderr)
        err = np.abs(np.asarray(Image.open(restored)).astype(np.int16) - original).max()
        assert err <= tau, (threads, isa, err)


def test_tiles_coded_on_threads_give_the_same_file(photos) -> None:
    """Tiles coded on several threads at once: the same bytes as one at a time, decoded crossed."""
    from nlic.api import Codec
    from nlic.coding.image import ImageCodec
    from nlic.model_io import load_model
    from nlic.model_store import DEFAULT_MODEL

    model = load_model(DEFAULT_MODEL)
    one = Codec(ImageCodec(model, tile=64, threads=1))
    many = Codec(ImageCodec(model, tile=64, threads=3))
    assert many.image_codec.model.lossy.thread_safe  # the default model's tiles do run on threads
    img = photos["chelsea"]  # 64 x 80: two tiles of 64
    grey = np.ascontiguousarray(photos["astronaut"][..., 0])  # 96 x 128: six tiles
    for pixels, tau, jxl in itertools.product((img, grey), (0, 2), (False, True)):
        # (at tau 0 these crops are stored as JPEG XL by default: without it, their learned tiles)
        one.image_codec.jxl_tiles = many.image_codec.jxl_tiles = jxl
        a, b = one.compress(pixels, tau), many.compress(pixels, tau)
        assert a.data == b.data
        for decoded in (one.decompress(b.data).pixels, many.decompress(a.data).pixels):
            err = np.abs(decoded.reshape(pixels.shape).astype(int) - pixels.astype(int)).max()
            assert err <= tau and (tau or err == 0)
