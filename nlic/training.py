"""The training job: build everything from the config, fit, export, evaluate, demo."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from nlic.cli._hydra import instantiate_dict
from nlic.scaleout import attach_wandb_run_id, compile_lossy_transforms, is_rank_zero_env, resolve_ckpt_path

log = logging.getLogger("nlic.train")


def _resolve_ckpt(cfg: DictConfig, output_dir: Path) -> str | None:
    # "last": newest of checkpoints/last.ckpt and SLURM requeue checkpoints in this run folder
    return resolve_ckpt_path(cfg.ckpt_path, output_dir)


def train(cfg: DictConfig) -> dict:
    """Fit the model described by ``cfg``; returns the final metrics (floats)."""
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model)
    if cfg.get("init_weights"):
        from nlic.lightning.warm_start import load_init_weights

        # one file, or a list of "FILE", "FILE:PREFIX" or "FILE:SRC->DST" (later entries win; PREFIX
        # keeps only those tensors, e.g. residual.tau_head. to join heads trained in separate runs;
        # SRC->DST copies tensors under another prefix, e.g. residual.head.->residual.tau_head.)
        entries = cfg.init_weights if isinstance(cfg.init_weights, (list, ListConfig)) else [cfg.init_weights]
        for entry in entries:
            path, _, prefix = str(entry).partition(":")
            src, arrow, dst = prefix.partition("->")
            load_init_weights(module.codec, path, only=None if arrow else prefix or None,
                              rename=(src, dst) if arrow else None)
        module._warm_started = True
    if cfg.get("compile", False):
        compile_lossy_transforms(getattr(module, "codec", module))
    attach_wandb_run_id(cfg, output_dir)  # one W&B run per run folder, kept across resumes
    loggers = instantiate_dict(cfg.get("logger"))
    callbacks = instantiate_dict(cfg.get("callbacks"))
    if not loggers:  # logger=none: nothing to report learning rates to (Lightning would refuse to start)
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if is_rank_zero_env():  # DDP children / other nodes must not create a W&B run before fit
        for lg in loggers:
            lg.log_hyperparams(resolved)
    trainer.fit(module, datamodule=datamodule, ckpt_path=_resolve_ckpt(cfg, output_dir))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    if trainer.is_global_zero:
        metrics.update(_after_training(cfg, module, output_dir, loggers))
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    for lg in loggers:
        if hasattr(lg, "experiment") and type(lg).__name__ == "WandbLogger":
            lg.experiment.finish()  # multirun jobs share a process: close each run
    return metrics


def _after_training(cfg: DictConfig, module, output_dir: Path, loggers: list) -> dict:
    """Rank 0 only: export the model, evaluate by real coding, compress the demo image."""
    from nlic.model_io import save_model

    if hasattr(module, "after_training"):  # e.g. the lossy-only module exports/evaluates itself
        return module.after_training(cfg, output_dir, loggers)
    out: dict = {}
    if not cfg.get("export", True):
        return out
    codec = module.codec.cpu().eval()
    model_path = output_dir / "model.pt"
    save_model(codec, module.hparams.model_config, model_path, meta={"task": cfg.task_name})
    log.info("exported model to %s", model_path)
    if cfg.get("register_model", True):
        from nlic.model_io import load_model
        from nlic.model_store import register

        log.info("registered as %s (nlic decompress finds it by id)", register(model_path, load_model(model_path).model_id))
    if cfg.evaluate.enabled:
        from nlic.data.images import load_folder
        from nlic.eval.evaluate import crop_images, evaluate_model, log_results, write_results

        images = load_folder(cfg.evaluate.root)
        if cfg.evaluate.get("include"):  # e.g. the held-out validation photos of data.root
            names = set(cfg.evaluate.include)
            images = [(n, a) for n, a in images if n in names]
        images = crop_images(images[: cfg.evaluate.max_images], cfg.evaluate.get("crop"))
        rows, summary = evaluate_model(model_path, images, list(cfg.evaluate.taus),
                                       without_bias_correction=bool(cfg.evaluate.get("without_bias_correction")))
        write_results(rows, summary, output_dir)
        log_results(rows, summary, loggers)
        out.update({f"eval/{k}": v for k, v in summary.items() if isinstance(v, (int, float))})
    if cfg.get("demo", False):
        from nlic.eval.demo import run_demo

        out.update(run_demo(model_path, output_dir))
    return out
