"""``nlic-train``: train a near-lossless model (lightning-hydra-template style entry point)."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from nlic.cli._hydra import config_dir, setup_environment

log = logging.getLogger("nlic.train")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from nlic.training import train

    try:
        metrics = train(cfg)
    except FloatingPointError as err:
        log.error("%s", err)
        sys.exit(3)
    return metrics.get("val/bpp")


def entry() -> None:
    setup_environment()
    main()


if __name__ == "__main__":
    entry()
