"""Files decode exactly on another machine: other thread counts, other SIMD kernels.

Each encode and decode runs in a fresh process with its own ``OMP_NUM_THREADS`` and
``ATEN_CPU_CAPABILITY`` (torch's switch between its portable kernels and this CPU's best SIMD
ones), exactly as a file made on one machine is opened on another.  The encoders must write the
same bytes, and every decoder must reproduce the image exactly.
"""

from __future__ import annotations

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


@pytest.mark.parametrize("tau", [0, 2])
def test_files_are_identical_and_exact_across_threads_and_kernels(photo_png: Path, tmp_path: Path, tau: int) -> None:
    files = []
    for i, (threads, isa) in enumerate(ENCODERS):
        out = tmp_path / f"enc{i}.nlic"
        enc = _run(["compress", str(photo_png), str(out), "--tau", str(tau)], threads, isa)
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
