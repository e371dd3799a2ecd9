"""Helpers shared by test_variants.py and test_sweeps.py: compose the Hydra tree, train in-process,
run ``nlic-train -m`` (in-process or as a subprocess), round-trip a real image through a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
BASE_LOSSY = ["factorized", "hyperprior", "mean_scale", "joint_ar", "checkerboard", "cheng2020", "c2f", "dlpr"]
MASKS = ["5p", "4p", "3p", "2p", "p", "serial", "none"]


def lossy_variants() -> list[str]:
    """Every lossy variant under test (``flow`` once conf/lossy/flow.yaml exists)."""
    return BASE_LOSSY + (["flow"] if (REPO / "conf" / "lossy" / "flow.yaml").exists() else [])


def sweep_names() -> list[str]:
    return sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))


def compose(overrides: list[str], hydra_config: bool = False) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides`` (Hydra's compose API, no run folder)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from nlic.cli._hydra import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides, return_hydra_config=hydra_config)


def train_in_process(overrides: list[str], out_dir: Path) -> dict:
    """``nlic.training.train`` on the composed config, run folder ``out_dir``, CSV logger only."""
    from nlic.training import train

    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = compose([*overrides, "logger=csv", f"paths.root_dir={out_dir}", f"paths.output_dir={out_dir}"])
    return train(cfg)


def multirun_in_process(args: list[str], sweep_dir: Path) -> list[Path]:
    """``nlic-train -m ARGS`` inside this process (Hydra's basic launcher); returns the job folders."""
    from hydra.core.global_hydra import GlobalHydra

    from nlic.cli._hydra import setup_environment
    from nlic.cli.train import main

    setup_environment()
    GlobalHydra.instance().clear()
    argv = sys.argv
    sys.argv = ["nlic-train", "-m", *args, f"hydra.sweep.dir={sweep_dir}"]
    try:
        main()
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
    return job_dirs(sweep_dir)


def entry_point(name: str) -> list[str]:
    """The console script ``name`` (``nlic-train``, ``nlic``) of this Python, else ``python -m`` its module."""
    script = Path(sys.executable).with_name(name)
    module = {"nlic": "nlic.cli.main", "nlic-train": "nlic.cli.train", "nlic-eval": "nlic.cli.evaluate"}[name]
    return [str(script)] if script.is_file() else [sys.executable, "-m", module]


def run_cli(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """A command line as a user types it (``nlic-train -m +sweeps=...``), run in ``cwd`` (W&B offline, one thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    cmd = [*entry_point(argv[0]), *argv[1:]]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def multirun_cli(args: list[str], sweep_dir: Path, cwd: Path, timeout: float = 600) -> list[Path]:
    """``nlic-train -m ARGS hydra.sweep.dir=SWEEP_DIR`` as a subprocess started in ``cwd``."""
    run_cli(["nlic-train", "-m", *args, f"hydra.sweep.dir={sweep_dir}"], cwd, timeout)
    return job_dirs(sweep_dir)


def job_dirs(sweep_dir: Path) -> list[Path]:
    dirs = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    return sorted(dirs, key=lambda p: int(p.name) if p.name.isdigit() else p.name)


def astronaut(height: int = 70, width: int = 90) -> np.ndarray:
    """A real photo crop (scikit-image's bundled astronaut), not a multiple of 64."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[120 : 120 + height, 170 : 170 + width])


def roundtrip_through_file(model_path: Path, image: np.ndarray, tau: int, work: Path) -> tuple[np.ndarray, int]:
    """Compress with one loaded codec, write the bytes to a file, decode the file with another."""
    from nlic.api import load_codec

    data = load_codec(model_path, stored_fallback=False).compress(image, tau).data
    path = work / f"{model_path.parent.name}_tau{tau}.nlic"
    path.write_bytes(data)
    restored = load_codec(model_path).decompress(path.read_bytes()).pixels
    return restored, len(data)
