"""Every sweep of sweeps/ composes job by job and smoke-runs under ``nlic-train -m +sweeps=NAME
debug=smoke``; ``nlic report`` builds its tables and plots from a finished smoke sweep.

Fast suite: two jobs of each sweep (the last swept key keeps its first two values, the others their
first).  ``-m slow``: every sweep's full grid (serial decoding included).  Run with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import shlex

import pytest
import yaml
from omegaconf import OmegaConf

from tests._runs import REPO, compose, job_dirs, multirun_cli, multirun_in_process, run_cli, sweep_names

SWEEPS = sweep_names()
#: extra overrides of the fast smoke run of a sweep (exercise a custom tau set on one of them)
EXTRA = {"mixtures": ["tau=custom", "tau.values=[0,2,7]", "evaluate.taus=${tau.values}"]}
#: the sweep run exactly as sweeps/README.md documents it, in a subprocess from an empty working directory
CLI_SWEEP = "bias_ablation"
#: the README's smoke-run command (NAME: the sweep)
README_SMOKE = "nlic-train -m +sweeps=NAME debug=smoke"

pytestmark = pytest.mark.usefixtures("one_thread")


def sweep_params(name: str) -> dict[str, list[str]]:
    cfg = yaml.safe_load((REPO / "sweeps" / f"{name}.yaml").read_text())
    params = cfg["hydra"]["sweeper"]["params"]
    return {k: [v.strip() for v in str(v).split(",")] for k, v in params.items()}


def two_job_overrides(name: str) -> list[str]:
    params = sweep_params(name)
    multi = [k for k, v in params.items() if len(v) > 1]
    last = multi[-1] if multi else None
    return [f"{k}={','.join(v[:2]) if k == last else v[0]}" for k, v in params.items()]


def check_job(job, sweep: str) -> dict:
    """A finished smoke job: W&B group, per-tau metrics of its whole tau set, real-coding results."""
    cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
    assert cfg.sweep_name == sweep
    assert cfg.logger.wandb.group == sweep if "wandb" in (cfg.get("logger") or {}) else True
    metrics = json.loads((job / "metrics.json").read_text())
    results = json.loads((job / "eval_results.json").read_text())
    if results.get("mode") == "lossy":
        for key in ("val/bpp", "val/psnr", "val/ms_ssim", "eval/bpp", "eval/psnr", "eval/ms_ssim"):
            assert math.isfinite(metrics[key]), key
        assert (job / "lossy_model.pt").is_file()
        return metrics
    for tau in cfg.tau["values"]:
        for key in ("bpp", "bpsp", "psnr", "max_err"):
            assert f"val/{key}_tau{tau}" in metrics, f"{job}: no val/{key}_tau{tau}"
        assert metrics[f"val/max_err_tau{tau}"] <= tau
    for tau in cfg.evaluate.taus:
        assert results["summary"][f"bound_ok_tau{tau}"], f"{job}: bound broken at tau {tau}"
        assert f"eval/bpp_tau{tau}" in metrics
    assert (job / "model.pt").is_file()
    return metrics


# ------------------------------------------------------------------ composition (no training)
def test_sweeps_found():
    assert {"bias_ablation", "lossy_compare", "context_masks", "lambda", "mixtures", "lossy_rd"} <= set(SWEEPS)
    readme = (REPO / "sweeps" / "README.md").read_text()
    for name in SWEEPS:
        assert f"+sweeps={name}" in readme


def job_grid(params: dict[str, list[str]], limit: int = 12) -> list[list[str]]:
    """Every job's overrides; past ``limit`` jobs, each value of each key once (others at their first)."""
    combos = list(itertools.product(*params.values()))
    if len(combos) > limit:
        first = [v[0] for v in params.values()]
        combos = [tuple(first)] + [
            tuple(v if j == i else first[j] for j in range(len(params)))
            for i, vals in enumerate(params.values()) for v in vals[1:]
        ]
    return [[f"{k}={v}" for k, v in zip(params, combo)] for combo in combos]


@pytest.mark.parametrize("name", SWEEPS)
def test_every_job_of_the_sweep_composes(name):
    """The sweep's jobs compose, name the sweep (= the W&B group) and instantiate their model."""
    from hydra.utils import instantiate

    params = sweep_params(name)
    base = compose([f"+sweeps={name}"], hydra_config=True)
    assert base.sweep_name == name and base.logger.wandb.group == name
    assert {k: str(v) for k, v in base.hydra.sweeper.params.items()} == {
        k: ",".join(v) for k, v in params.items()}
    seen = set()
    for overrides in job_grid(params):
        cfg = compose([f"+sweeps={name}", *overrides, "debug=smoke"])
        assert cfg.sweep_name == name
        arch = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if "config" in k}
        key = json.dumps([cfg.model._target_, arch], sort_keys=True)
        if key not in seen:  # one instantiation per distinct architecture
            seen.add(key)
            instantiate(cfg.model)


def test_command_line_replaces_the_grid():
    cfg = compose(["+sweeps=lambda", "lmbda=0.5"])
    assert cfg.lmbda == 0.5 and cfg.sweep_name == "lambda"


# ------------------------------------------------------------------ smoke runs
_RUNS: dict[str, list] = {}


def smoke_sweep(name: str, tmp_path_factory) -> list:
    """Two jobs of a sweep under debug=smoke (once per session)."""
    if name not in _RUNS:
        sweep_dir = tmp_path_factory.mktemp(f"sweep_{name}")
        args = [f"+sweeps={name}", "debug=smoke", *two_job_overrides(name), *EXTRA.get(name, [])]
        if name == CLI_SWEEP:  # the README command verbatim, outputs under the directory it runs in
            _RUNS[name] = readme_sweep(name, tmp_path_factory.mktemp("cwd"))
        else:
            _RUNS[name] = multirun_in_process([*args, "logger=csv"], sweep_dir)
    return _RUNS[name]


def readme_sweep(name: str, cwd) -> list:
    """``nlic-train -m +sweeps=NAME debug=smoke`` as sweeps/README.md gives it (no hydra.sweep.dir), typed in
    ``cwd``: its jobs land in ``cwd/outputs/train/multiruns/NAME/<time>/<job>``."""
    assert README_SMOKE in (REPO / "sweeps" / "README.md").read_text()
    proc = run_cli(shlex.split(README_SMOKE.replace("NAME", name)), cwd)
    out = proc.stdout + proc.stderr
    # what a log file of the run shows: a line per epoch, per evaluated image, the closing summary
    for line in ("epoch 1/1 | step ", "| train bpp ", "val bpp tau0 ", " elapsed, ETA ", "eval 1/1 ",
                 "real coding (eval_results.md):", "model:   ", "upload it with: wandb sync "):
        assert line in out, line
    # and none of the third-party noise filtered by nlic.utils.warning_filters
    for noise in ("torch.jit.script", "litlogger", "anonymous setting", "LeafSpec"):
        assert noise not in out, noise
    (sweep_dir,) = (cwd / "outputs" / "train" / "multiruns" / name).iterdir()
    assert sorted(p.name for p in cwd.iterdir()) == ["outputs"]  # nothing else written into the working dir
    return job_dirs(sweep_dir)


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_smoke_runs(name, tmp_path_factory):
    jobs = smoke_sweep(name, tmp_path_factory)
    assert len(jobs) == 2
    for job in jobs:
        check_job(job, name)
    overrides = [yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text()) for j in jobs]
    assert all(f"+sweeps={name}" in o for o in overrides)
    assert overrides[0] != overrides[1]
    if name == CLI_SWEEP:  # one offline W&B run per job, in the sweep's group, every tau of the set
        for job in jobs:
            (run_file,) = job.glob("wandb/offline-run-*/run-*.wandb")
            group, history = read_wandb_run(run_file)
            assert group == name
            taus = OmegaConf.load(job / ".hydra" / "config.yaml").tau["values"]
            for tau in taus:
                for key in ("bpp", "bpsp", "psnr", "max_err"):
                    assert f"val/{key}_tau{tau}" in history
            assert "eval/results/_type" in history  # the results table


def read_wandb_run(run_file) -> tuple[str, dict]:
    """(group, history keys) of an offline W&B run file."""
    from pathlib import Path

    wandb_offline = pytest.importorskip("nlic.utils.wandb_offline")
    from wandb.proto import wandb_internal_pb2 as pb

    group = ""
    for raw in wandb_offline._records(Path(run_file).read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == "run":
            group = rec.run.run_group
            break
    return group, wandb_offline.read_history(run_file)


# ------------------------------------------------------------------ nlic report
def test_report_from_smoke_sweep(tmp_path_factory, tmp_path, capsys):
    from nlic.cli.main import main

    jobs = smoke_sweep(CLI_SWEEP, tmp_path_factory)
    sweep_dir = jobs[0].parent
    out = tmp_path / "report"
    assert main(["report", str(sweep_dir), "--out", str(out), "--wandb"]) == 0
    printed = capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "# sweep bias_ablation" in md and md in printed
    for label in ("bias_correction=on", "bias_correction=off"):
        assert f"| {label} |" in md
    for section in ("## bpp (real coding", "## PSNR (dB) (real coding", "## max error (real coding",
                    "## bpp (validation estimate"):
        assert section in md
    assert "τ=5" in md  # the validation tables cover the whole tau set 0to5
    with open(out / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["variant"] for r in rows} == {"bias_correction=on", "bias_correction=off"}
    assert {(r["source"], r["tau"]) for r in rows} >= {("eval", "0"), ("eval", "1"), ("val", "5")}
    for png in ("bpp_vs_tau.png", "psnr_vs_bpp.png", "decode_time_vs_mask.png"):
        assert (out / png).stat().st_size > 1000
    (run_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    group, history = read_wandb_run(run_file)
    assert group == "bias_ablation"
    assert {"report/table/_type", "report/bpp_vs_tau/_type", "report/psnr_vs_bpp/_type"} <= set(history)


def test_report_lossy_rd_sweep(tmp_path_factory, tmp_path):
    from nlic.report import build_report, collect_runs

    jobs = smoke_sweep("lossy_rd", tmp_path_factory)
    runs = collect_runs(jobs[0].parent)
    assert [r.mode for r in runs] == ["lossy", "lossy"]
    files = build_report(runs, tmp_path)
    md = files["markdown"].read_text()
    assert "lossy-only rate–distortion" in md and "MS-SSIM" in md
    assert {"psnr_vs_bpp", "ms_ssim_vs_bpp"} <= set(files)


def test_report_errors(tmp_path, capsys):
    from nlic.cli.main import main

    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert "no runs under" in capsys.readouterr().err


# ------------------------------------------------------------------ full grids (slow)
@pytest.mark.slow
@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_full_grid_smoke(name, tmp_path):
    jobs = multirun_cli([f"+sweeps={name}", "debug=smoke", "logger=csv"], tmp_path / "sweep", cwd=tmp_path,
                        timeout=3600)
    expected = math.prod(len(v) for v in sweep_params(name).values())
    assert len(jobs) == expected == len(job_dirs(tmp_path / "sweep"))
    for job in jobs:
        check_job(job, name)
