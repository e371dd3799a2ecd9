"""Objects from config groups that hold several ``_target_`` entries (``conf/logger``, ``conf/callbacks``)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig


def instantiate_dict(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a dict-of-configs (loggers, callbacks), in order."""
    from hydra.utils import instantiate

    if not cfg:
        return []
    return [instantiate(v) for v in cfg.values() if isinstance(v, DictConfig) and "_target_" in v]
