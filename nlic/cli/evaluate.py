"""``nlic-eval ckpt_path=... [data=folder data.root=DIR] [tau=0to5]``: real-coding evaluation."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from nlic.cli._hydra import config_dir, setup_environment

log = logging.getLogger("nlic.eval")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> None:
    from nlic.data.images import load_folder
    from nlic.eval.evaluate import evaluate_model, markdown_table, write_results
    from nlic.training import log_summary
    from nlic.utils.instantiate import instantiate_dict
    from nlic.utils.loggers import finish_wandb, log_results, scalar_metrics

    start = time.monotonic()
    out_dir = Path(cfg.paths.output_dir)
    images = load_folder(cfg.data.root)
    if cfg.max_images:
        images = images[: cfg.max_images]
    log.info("real-coding evaluation of %s on %d images at tau %s", cfg.ckpt_path, len(images),
             ", ".join(map(str, cfg.tau["values"])))
    rows, summary = evaluate_model(cfg.ckpt_path, images, list(cfg.tau["values"]), tile=cfg.tile)
    table = markdown_table(rows)
    write_results(rows, summary, out_dir, markdown=table)
    loggers = instantiate_dict(cfg.get("logger"))
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    log_results(rows, scalar_metrics(summary), loggers)
    log_summary("nlic-eval", time.monotonic() - start, out_dir, {}, table, None, loggers)
    finish_wandb(loggers)


def entry() -> None:
    setup_environment()
    main()


if __name__ == "__main__":
    entry()
