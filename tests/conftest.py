"""Shared fixtures: real images (scikit-image's bundled photos) and a tiny exported model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# small tensors: one thread each is fastest and keeps subprocesses (which inherit this) from
# oversubscribing the cores; override with OMP_NUM_THREADS
os.environ.setdefault("OMP_NUM_THREADS", "1")
# exported models are registered in a model store: the tests' own, never the user's
if "NLIC_MODEL_DIR" not in os.environ:
    import tempfile

    os.environ["NLIC_MODEL_DIR"] = tempfile.mkdtemp(prefix="nlic-test-models-")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parents[1]

TINY_CONFIG = {
    "lossy": {"_target_": "nlic.codecs.mean_scale.MeanScaleHyperprior", "N": 16, "M": 24, "feature_channels": 8},
    "residual": {
        "_target_": "nlic.residual.network.ResidualNetwork", "feature_channels": 8, "mask": "3p",
        "mixtures": 2, "context_channels": 8, "hidden": 16, "layers": 2, "bias_correction": True,
    },
}


def make_tiny_model(path: Path, seed: int = 0, config: dict | None = None) -> Path:
    from nlic.model_io import build_codec, save_model

    torch.manual_seed(seed)
    cfg = config or TINY_CONFIG
    save_model(build_codec(cfg), cfg, path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model file: coding is exact whatever the weights, so tests stay fast."""
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photo, odd-sized crop (not a multiple of 64)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[40:107, 150:281])  # 67 x 131


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {
        "astronaut": np.ascontiguousarray(data.astronaut()[:96, :128]),
        "chelsea": np.ascontiguousarray(data.chelsea()[50:114, 100:180]),
        "coffee": np.ascontiguousarray(data.coffee()[100:165, 200:300]),
    }


@pytest.fixture
def one_thread():
    """Pin torch to one thread for a test (restored afterwards), whatever OMP_NUM_THREADS says."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
