"""What the Hydra entry points (``nlic-train``, ``nlic-eval``) share: the config tree, the environment."""

from __future__ import annotations

import os

from nlic.project import config_dir  # also registers the configs' resolvers

__all__ = ["config_dir", "setup_environment"]


def setup_environment() -> None:
    """Offline W&B unless the user chose otherwise; quiet tokenizers/telemetry; third-party warnings
    a user cannot act on filtered (:mod:`nlic.utils.warning_filters`)."""
    from nlic.utils.warning_filters import filter_third_party_warnings

    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    filter_third_party_warnings()
