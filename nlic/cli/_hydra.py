"""Where the Hydra config tree lives and helpers shared by the Hydra entry points."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig


def config_dir() -> str:
    """The ``conf/`` tree at the repository root (an editable install points here)."""
    env = os.environ.get("NLIC_CONFIG_DIR")
    if env:
        return str(Path(env).resolve())
    return str(Path(__file__).resolve().parents[2] / "conf")


def setup_environment() -> None:
    """Offline W&B unless the user chose otherwise; quiet tokenizers/telemetry."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")


def instantiate_dict(cfg: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a dict-of-configs (loggers, callbacks)."""
    from hydra.utils import instantiate

    if not cfg:
        return []
    return [instantiate(v) for v in cfg.values() if isinstance(v, DictConfig) and "_target_" in v]
