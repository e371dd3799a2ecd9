"""Where the Hydra config tree lives and helpers shared by the Hydra entry points."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def config_dir() -> str:
    """The ``conf/`` tree at the repository root (an editable install points here)."""
    env = os.environ.get("NLIC_CONFIG_DIR")
    if env:
        return str(Path(env).resolve())
    return str(Path(__file__).resolve().parents[2] / "conf")


def project_root() -> str:
    """The folder holding ``conf/`` and ``sweeps/`` (``NLIC_SWEEPS_ROOT`` overrides it).

    ``conf/train.yaml`` adds it to Hydra's search path as ``file://${nlic_root:}``, so
    ``nlic-train -m +sweeps=NAME`` finds ``sweeps/NAME.yaml`` from any working directory.
    """
    env = os.environ.get("NLIC_SWEEPS_ROOT")
    return str(Path(env).resolve()) if env else str(Path(config_dir()).parent)


# registered on import: every Hydra entry point imports this module before composing
OmegaConf.register_new_resolver("nlic_root", project_root, replace=True)


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
