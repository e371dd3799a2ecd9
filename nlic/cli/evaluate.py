"""``nlic-eval ckpt_path=... [data=folder data.root=DIR] [tau=0to5]``: real-coding evaluation."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from nlic.cli._hydra import config_dir, instantiate_dict, setup_environment

log = logging.getLogger("nlic.eval")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> None:
    from nlic.data.images import load_folder
    from nlic.eval.evaluate import evaluate_model, log_results, markdown_table, write_results

    out_dir = Path(cfg.paths.output_dir)
    images = load_folder(cfg.data.root)
    if cfg.max_images:
        images = images[: cfg.max_images]
    rows, summary = evaluate_model(cfg.ckpt_path, images, list(cfg.tau.values), tile=cfg.tile)
    write_results(rows, summary, out_dir)
    loggers = instantiate_dict(cfg.get("logger"))
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    log_results(rows, summary, loggers)
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            lg.experiment.finish()
    log.info("results in %s\n%s", out_dir, markdown_table(rows))


def entry() -> None:
    setup_environment()
    main()


if __name__ == "__main__":
    entry()
