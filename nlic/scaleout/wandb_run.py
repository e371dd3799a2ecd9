"""One W&B run per run folder, across restarts (``ckpt_path=last``, SLURM requeue)."""

from __future__ import annotations

import logging
import secrets
import string
from pathlib import Path

from omegaconf import DictConfig, open_dict

from nlic.scaleout.env import is_rank_zero_env

log = logging.getLogger(__name__)

#: file in the run folder holding the W&B run id
WANDB_ID_FILE = "wandb_id.txt"


def new_run_id(length: int = 8) -> str:
    """A random W&B-style run id (lowercase letters and digits)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _wandb_nodes(cfg: DictConfig) -> list[DictConfig]:
    loggers = cfg.get("logger") or {}
    return [
        node for node in loggers.values()
        if isinstance(node, DictConfig) and str(node.get("_target_", "")).endswith("WandbLogger")
    ]


def attach_wandb_run_id(cfg: DictConfig, output_dir: str | Path) -> str | None:
    """Give every WandbLogger of ``cfg`` the run folder's W&B id (``id=..., resume="allow"``).

    The id is read from ``<output_dir>/wandb_id.txt``; the first start of a run folder takes the
    configured ``id`` or a fresh one and (rank 0 only) writes the file, so a killed or requeued job
    restarted in the same folder logs into the same W&B run.  Returns the id (``None``: no W&B logger).
    """
    nodes = _wandb_nodes(cfg)
    if not nodes:
        return None
    path = Path(output_dir) / WANDB_ID_FILE
    run_id = path.read_text().strip() if path.is_file() else ""
    if not run_id:
        run_id = next((str(n.id) for n in nodes if n.get("id")), "")
    if not run_id:
        run_id = new_run_id()
    if is_rank_zero_env() and not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id + "\n")
        log.info("W&B run id %s (saved to %s)", run_id, path)
    for node in nodes:
        with open_dict(node):
            node.id = run_id
            node.resume = "allow"
    return run_id
