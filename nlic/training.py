"""The training job: build everything from the config and fit; then, on rank 0, export the model,
evaluate it by real coding, compress the demo image, log the results and end with a summary."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from nlic.codecs.base import LossyCodec
from nlic.lightning.progress import duration, validation_summary
from nlic.scaleout import attach_wandb_run_id, compile_lossy_transforms, is_rank_zero_env, resolve_ckpt_path
from nlic.utils.instantiate import instantiate_dict
from nlic.utils.loggers import finish_wandb, log_results, scalar_metrics, wandb_location
from nlic.utils.warning_filters import filter_third_party_warnings

log = logging.getLogger("nlic.train")


def train(cfg: DictConfig) -> dict:
    """Fit the model described by ``cfg``; returns the final metrics (floats)."""
    start = time.monotonic()
    filter_third_party_warnings()
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
    # "last": newest of checkpoints/last.ckpt and SLURM requeue checkpoints in this run folder
    trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg.ckpt_path, output_dir))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    if trainer.is_global_zero:
        model_path, table = after_training(cfg, module, output_dir, loggers, metrics)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        log_summary(f"{cfg.task_name} run", time.monotonic() - start, output_dir, metrics, table, model_path, loggers)
    finish_wandb(loggers)  # multirun jobs share a process: close each run
    return metrics


def after_training(cfg: DictConfig, module: pl.LightningModule, output_dir: Path, loggers: list,
                   metrics: dict) -> tuple[Path | None, str]:
    """Rank 0: export the model, evaluate it by real coding (``eval_results.*``, ``eval/*`` into
    ``metrics``) and compress the demo image; returns (model file, results table in markdown)."""
    from nlic.model_io import save_lossy_model, save_model

    if not cfg.get("export", True):
        return None, ""
    codec = module.codec.cpu().eval()
    lossy_only = isinstance(codec, LossyCodec)  # experiment=lossy_only: the lossy codec trained alone
    log.info("exporting the trained model (CDF tables%s)", "" if lossy_only else ", integer-network calibration")
    if lossy_only:
        model_path = output_dir / "lossy_model.pt"
        save_lossy_model(codec, {"lossy": module.hparams.lossy_config}, model_path,
                         meta={"task": cfg.task_name, "lmbda": module.hparams.lmbda})
        log.info("exported lossy model to %s", model_path)
    else:
        model_path = output_dir / "model.pt"
        save_model(codec, module.hparams.model_config, model_path, meta={"task": cfg.task_name})
        log.info("exported model to %s", model_path)
        if cfg.get("register_model", True):
            from nlic.model_io import load_model
            from nlic.model_store import register

            stored = register(model_path, load_model(model_path).model_id)
            log.info("registered as %s (nlic decompress finds it by id)", stored)
    table = ""
    if cfg.evaluate.enabled:
        from nlic.data.images import load_folder
        from nlic.eval.evaluate import crop_images, evaluate_model, markdown_table, write_results

        images = load_folder(cfg.evaluate.root)
        if cfg.evaluate.get("include"):  # e.g. the held-out validation photos of data.root
            names = set(cfg.evaluate.include)
            images = [(n, a) for n, a in images if n in names]
        images = crop_images(images[: cfg.evaluate.max_images], cfg.evaluate.get("crop"))
        log.info("real-coding evaluation of %s on %d images", model_path.name, len(images))
        if lossy_only:
            from nlic.eval.lossy import evaluate_lossy, markdown_table_lossy

            rows, summary = evaluate_lossy(model_path, images)
            table = markdown_table_lossy(rows)
        else:
            rows, summary = evaluate_model(model_path, images, list(cfg.evaluate.taus),
                                           without_bias_correction=bool(cfg.evaluate.get("without_bias_correction")))
            table = markdown_table(rows)
        write_results(rows, summary, output_dir, markdown=table, mode="lossy" if lossy_only else None)
        scalars = scalar_metrics(summary)
        log_results(rows, scalars, loggers)
        metrics.update(scalars)
    if cfg.get("demo", False) and not lossy_only:
        from nlic.eval.demo import run_demo

        metrics.update(run_demo(model_path, output_dir))
    return model_path, table


def log_summary(title: str, seconds: float, output_dir: Path, metrics: dict, table: str, model_path: Path | None,
                loggers: list) -> None:
    """The closing lines of a job: its results table, where results, model and W&B run are, how to upload."""
    lines = [f"{title} finished in {duration(seconds)}"]
    if table:
        lines += ["real coding (eval_results.md):", table.rstrip()]
    elif validation_summary(metrics):
        lines.append(f"last validation: {validation_summary(metrics)}")
    files = [f.name for f in sorted(output_dir.glob("*")) if f.suffix in (".json", ".csv", ".md") and f.is_file()]
    lines.append(f"results: {output_dir}" + (f" ({', '.join(files)})" if files else ""))
    if model_path is not None:
        lines.append(f"model:   {model_path}")
    if (output_dir / "checkpoints").is_dir():
        lines.append(f"checkpoints: {output_dir / 'checkpoints'} "
                     f"(continue: nlic-train <same overrides> hydra.run.dir={output_dir} ckpt_path=last)")
    lines += wandb_location(loggers)
    log.info("\n".join(lines))
