"""Files decode whatever the thread count of the encoding and the decoding process.

Each encode and decode runs in a fresh process with its own ``OMP_NUM_THREADS``, exactly as a file
made on one machine is opened on another.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _run(args: list[str], threads: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.run([sys.executable, "-m", "nlic.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def photo_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skimage import data

    path = tmp_path_factory.mktemp("portable") / "chelsea.png"
    Image.fromarray(np.ascontiguousarray(data.chelsea()[:192, :256])).save(path)
    return path


@pytest.mark.parametrize(("enc_threads", "dec_threads"), [(2, 1), (1, 2)])
def test_file_decodes_with_another_thread_count(photo_png: Path, tmp_path: Path, enc_threads: int,
                                                dec_threads: int) -> None:
    """The shipped default model: encoded with one thread count, decoded exactly with another."""
    packed, restored = tmp_path / "c.nlic", tmp_path / "c.png"
    enc = _run(["compress", str(photo_png), str(packed), "--tau", "0"], enc_threads)
    assert enc.returncode == 0, enc.stderr
    dec = _run(["decompress", str(packed), str(restored)], dec_threads)
    assert dec.returncode == 0, dec.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(restored)), np.asarray(Image.open(photo_png)))
