"""A regular install works from any directory, with no environment variable: build the wheel, install it
into a throwaway virtualenv (``--system-site-packages`` for the dependencies, ``--no-deps``, no
network) and train, evaluate, sweep and code from outside the checkout.  About two minutes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests._runs import REPO, astronaut

pytestmark = pytest.mark.slow

#: what a source distribution holds (setup.py packs conf/ and sweeps/ into the wheel)
SOURCES = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "nlic", "conf", "sweeps"]


def _run(cmd: list, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def test_wheel_trains_evaluates_sweeps_and_codes_from_anywhere(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: building writes build/ and nlic.egg-info beside the sources
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "_project"))
        else:
            shutil.copy(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src],
         cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("nlic-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv], cwd=tmp_path)
    bin_dir = venv / "bin"
    _run([bin_dir / "python", "-m", "pip", "install", "--no-deps", "--no-index", wheel], cwd=tmp_path)

    work = tmp_path / "work"  # an unrelated directory, nothing of the checkout on the path
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "NLIC_CONFIG_DIR", "NLIC_SWEEPS_ROOT", "NLIC_ROOT", "WANDB_SERVICE")}
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="offline", WANDB_SILENT="true")
    where = _run([bin_dir / "python", "-c", "import nlic; print(nlic.__file__)"], work, env).stdout
    assert Path(where.strip()).is_relative_to(venv), where

    _run([bin_dir / "nlic-train", "experiment=quickstart", "debug=smoke"], work, env)
    (run,) = (work / "outputs" / "quickstart" / "runs").iterdir()
    summary = json.loads((run / "eval_results.json").read_text())["summary"]
    assert summary["bound_ok_tau0"] and summary["bound_ok_tau1"]

    photos = work / "photos"
    photos.mkdir()
    Image.fromarray(astronaut()).save(photos / "photo.png")
    _run([bin_dir / "nlic-eval", f"ckpt_path={run / 'model.pt'}", "data=folder", f"data.root={photos}",
          "tau=lossless", "logger=csv"], work, env)
    (evaluation,) = (work / "outputs" / "eval" / "runs").iterdir()
    assert json.loads((evaluation / "eval_results.json").read_text())["summary"]["bound_ok_tau0"]

    # a sweep file from the packaged sweeps/ (one job of the lambda sweep)
    _run([bin_dir / "nlic-train", "-m", "+sweeps=lambda", "debug=smoke", "lmbda=0", "logger=csv",
          "evaluate.enabled=false"], work, env)
    assert list((work / "outputs" / "train" / "multiruns" / "lambda").glob("*/0/model.pt"))

    _run([bin_dir / "nlic", "compress", photos / "photo.png", "photo.nlic", "--tau", "1", "--model", run / "model.pt"],
         work, env)
    _run([bin_dir / "nlic", "decompress", "photo.nlic", "restored.png", "--model", run / "model.pt"], work, env)
    restored = np.asarray(Image.open(work / "restored.png").convert("RGB")).astype(int)
    assert np.abs(restored - astronaut().astype(int)).max() <= 1
