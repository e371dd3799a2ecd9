"""Scale-out: DDP on CPU (gloo), the local and SLURM launchers, kill-and-resume, mixed precision.

The end-to-end tests run ``python -m nlic.cli.train`` in subprocesses with every output under
``tmp_path``; W&B runs offline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import nlic.cli._hydra  # noqa: F401  (registers the ${nlic_root:} resolver used by conf/train.yaml)
from nlic.cli._hydra import config_dir

SMOKE = ["debug=smoke"]
_RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_JOB_ID",
              "MASTER_ADDR", "MASTER_PORT", "PL_GLOBAL_SEED")


def _env() -> dict[str, str]:
    # WANDB_SERVICE: set once this pytest process has started W&B (in-process tests); inherited, it
    # would make every job share this process's W&B service, which keeps a killed job's run
    # registered ("run ID is in use" on resume) - a real job gets its own service
    env = {k: v for k, v in os.environ.items() if k not in _RANK_VARS and k != "WANDB_SERVICE"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline", WANDB_SILENT="true",
               WANDB_DISABLE_GIT="true", HYDRA_FULL_ERROR="1")
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "nlic.cli.train", *args]


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(_cmd(*args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"nlic-train {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), whatever session or group it moved to."""
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [c for c, p in parent.items() if p in frontier]
        found += children
        frontier = children
    return found


def _wandb_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


# --------------------------------------------------------------------------------------- DDP on CPU
def test_ddp_cpu_one_run_folder_one_wandb_run(tmp_path):
    """2 gloo processes: one run folder, one W&B run, model.pt exported once, replicas in sync."""
    logs = tmp_path / "logs"
    check = "+callbacks.replica_check._target_=nlic.scaleout.ReplicaCheck"
    _run([*SMOKE, "trainer=ddp_cpu", f"paths.log_dir={logs}", check], cwd=tmp_path)
    runs = [p for p in (logs / "train" / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs  # rank 1 reused rank 0's folder
    run = runs[0]
    assert sorted(p.name for p in logs.rglob("model.pt")) == ["model.pt"]
    assert (run / "model.pt").is_file() and (run / "metrics.json").is_file()
    rank0_log = (run / "train.log").read_text()
    rank1_log = (run / "train_ddp_process_1.log").read_text()  # the child logged into the same folder
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in rank1_log
    assert (rank0_log + rank1_log).count("exported model to") == 1
    # all three optimizers' gradients were all-reduced: both ranks end with identical weights
    assert "identical on 2 ranks" in rank0_log and "identical on 2 ranks" in rank1_log
    wandb_runs = _wandb_runs(run)
    run_id = (run / "wandb_id.txt").read_text().strip()
    assert [p.name.rsplit("-", 1)[-1] for p in wandb_runs] == [run_id]
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "outputs").exists()
    assert not (run / ".hydra" / "overrides.yaml").read_text().count("train_ddp_process")


# ------------------------------------------------------------------------------ kill and resume
def test_sigkill_then_resume_continues_step_and_wandb_run(tmp_path):
    logs = tmp_path / "logs"
    # long epochs (no validation before the kill), a checkpoint after every training step
    args = [*SMOKE, "export=false", f"paths.log_dir={logs}", "trainer.max_epochs=1000", "data.epoch_size=100000",
            "callbacks.last_checkpoint.every_n_train_steps=1"]
    with open(tmp_path / "first.log", "w") as out:
        proc = subprocess.Popen(_cmd(*args), cwd=tmp_path, env=_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            last = None
            while last is None:
                found = list((logs / "train" / "runs").glob("*/checkpoints/last.ckpt"))
                last = found[0] if found else None
                assert proc.poll() is None, (tmp_path / "first.log").read_text()[-4000:]
                assert time.monotonic() < deadline, "no checkpoint appeared"
                time.sleep(0.1)
            time.sleep(0.5)  # let it write a few more (atomically replaced) checkpoints
        finally:
            # the whole tree at once (trainer, data workers, the W&B service in its own session), as a
            # scheduler's preemption kills every process of the job; a surviving W&B service would
            # still hold the run id when the resumed job asks for it
            for pid in [proc.pid, *_descendants(proc.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    run = last.parents[1]
    step_before = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    id_before = (run / "wandb_id.txt").read_text().strip()
    assert step_before > 0 and id_before

    resumed = _run([*args, f"hydra.run.dir={run}", "ckpt_path=last", f"trainer.max_steps={step_before + 6}"],
                   cwd=tmp_path)
    step_after = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    id_after = (run / "wandb_id.txt").read_text().strip()
    print(f"resume: step before kill {step_before}, after resume {step_after}; W&B id {id_before} -> {id_after}")
    assert step_after == step_before + 6 > step_before
    assert id_after == id_before
    log = (run / "train.log").read_text() + resumed.stdout + resumed.stderr
    assert "Restored all states from the checkpoint" in log
    # two processes, one W&B run: both offline run folders carry the same id
    assert [p.name.rsplit("-", 1)[-1] for p in _wandb_runs(run)] == [id_before, id_before]
    assert len([p for p in (logs / "train" / "runs").iterdir() if p.is_dir()]) == 1


# ------------------------------------------------------------------------------- local launcher
def test_local_launcher_config_uses_submitit_local():
    cfg = _compose(["launcher=local"])
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.LocalLauncher")
    assert cfg.hydra.launcher.tasks_per_node == 1
    # job folders: <sweep dir with microseconds>/<job num>, so parallel jobs never share a folder
    sweep = cfg.hydra.sweep
    assert "%f" in sweep._get_node("dir")._value() and sweep._get_node("subdir")._value() == "${hydra.job.num}"


@pytest.mark.slow  # two parallel training jobs: ~20 s on an idle 2-core machine, more when loaded
def test_local_launcher_sweep_runs_jobs_in_parallel_folders(tmp_path):
    logs = tmp_path / "logs"
    _run(["-m", "launcher=local", *SMOKE, "lmbda=0,0.01", "export=false", f"paths.log_dir={logs}"], cwd=tmp_path)
    sweeps = [p for p in (logs / "train" / "multiruns" / "adhoc").iterdir() if p.is_dir()]
    assert len(sweeps) == 1, sweeps
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0", "1"]
    lmbdas = set()
    for job in jobs:
        assert (job / "metrics.json").is_file(), job
        cfg = OmegaConf.load(job / ".hydra" / "config.yaml")
        lmbdas.add(float(cfg.lmbda))
        assert len(_wandb_runs(job)) == 1
    assert lmbdas == {0.0, 0.01}
    assert len({(job / "wandb_id.txt").read_text() for job in jobs}) == 2
    assert (sweeps[0] / ".submitit").is_dir()  # really went through submitit


@pytest.mark.slow
def test_ddp_inside_a_local_sweep_job_keeps_one_folder(tmp_path):
    """DDP children of a submitit job rebuild the job (not the sweep, not submitit's runner)."""
    logs = tmp_path / "logs"
    check = "+callbacks.replica_check._target_=nlic.scaleout.ReplicaCheck"
    _run(["-m", "launcher=local", "trainer=ddp_cpu", *SMOKE, "lmbda=0", "export=false", f"paths.log_dir={logs}", check],
         cwd=tmp_path)
    (sweep,) = (logs / "train" / "multiruns" / "adhoc").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["0"]
    job = sweep / "0"
    assert "identical on 2 ranks" in (job / "train_ddp_process_1.log").read_text()
    assert (job / "metrics.json").is_file() and len(_wandb_runs(job)) == 1


# -------------------------------------------------------------------------------- SLURM launcher
def test_slurm_launcher_config_ties_resources_to_trainer(tmp_path, monkeypatch):
    cfg = _compose(["launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == cfg.trainer.devices == 4
    assert launcher.gpus_per_node == cfg.trainer.devices
    assert launcher.nodes == cfg.trainer.num_nodes == 2
    assert cfg.ckpt_path == "last"  # requeued jobs resume from their own folder
    # Lightning's auto-requeue listens on the signal submitit asks SLURM for
    from hydra.utils import instantiate

    from nlic.scaleout.slurm import RequeueSignalHandoff, signal_from_name

    plugins = cfg.trainer.plugins
    env_cfg = next(p for p in plugins if p._target_.endswith("slurm_environment"))
    assert signal_from_name(env_cfg.requeue_signal) == signal_from_name(None) == signal.SIGUSR2
    assert isinstance(instantiate(cfg.callbacks.requeue_signal_handoff), RequeueSignalHandoff)
    # the sbatch script submitit would write (a fake srun makes submitit believe it is on a cluster)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    import submitit

    keys = ["timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "partition",
            "account", "qos", "constraint", "signal_delay_s", "additional_parameters", "setup"]
    base = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes"}
    params = {k: launcher[k] for k in keys}
    params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in params.items()}
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    sbatch = executor._executor._make_submission_file_text("python -u -m submitit.core._submit X", "uid")
    for line in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--signal=USR2@90", "--requeue",
                 "--export=ALL,WANDB_MODE=offline"):
        assert line in sbatch, (line, sbatch)
    # other device counts follow from the one place
    cfg8 = _compose(["launcher=slurm", "trainer=ddp", "trainer.devices=8"])
    assert cfg8.hydra.launcher.tasks_per_node == cfg8.hydra.launcher.gpus_per_node == 8
    assert cfg8.hydra.launcher.nodes == 1


def test_slurm_launcher_reads_machine_settings_from_local_config(tmp_path):
    from hydra import compose, initialize_config_dir

    conf = tmp_path / "conf"
    import shutil

    shutil.copytree(config_dir(), conf)
    example = Path(config_dir()) / "local" / "default.yaml.example"
    shutil.copy(example, conf / "local" / "default.yaml")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["launcher=slurm", "trainer=ddp"], return_hydra_config=True)
    assert cfg.hydra.launcher.partition == "gpu"
    assert cfg.hydra.launcher.account == "my-project"
    assert cfg.hydra.launcher.timeout_min == 1440
    assert list(cfg.hydra.launcher.setup) == ["source ~/venvs/nlic/bin/activate"]
    # without a local config: no partition, cluster default
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        plain = compose(config_name="train", overrides=["launcher=slurm"], return_hydra_config=True)
    if not (Path(config_dir()) / "local" / "default.yaml").exists():
        assert plain.hydra.launcher.partition is None


def test_requeue_handoff_gives_signal_to_lightning_and_back():
    from lightning_fabric.plugins.environments import SLURMEnvironment

    from nlic.scaleout.slurm import RequeueSignalHandoff

    def submitit_handler(signum, frame):  # stands in for submitit's checkpoint_and_try_requeue
        pass

    class FakeTrainer:
        class strategy:  # noqa: N801
            cluster_environment = SLURMEnvironment.__new__(SLURMEnvironment)

    FakeTrainer.strategy.cluster_environment.auto_requeue = True
    FakeTrainer.strategy.cluster_environment.requeue_signal = signal.SIGUSR2
    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        cb = RequeueSignalHandoff()
        cb.setup(FakeTrainer, None, "fit")
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL  # Lightning registers its own now
        cb.teardown(FakeTrainer, None, "fit")
        assert signal.getsignal(signal.SIGUSR2) is submitit_handler
    finally:
        signal.signal(signal.SIGUSR2, previous)


# --------------------------------------------------------------------------------- unit helpers
def test_resolve_ckpt_path_prefers_newest_checkpoint(tmp_path):
    from nlic.scaleout import resolve_ckpt_path

    assert resolve_ckpt_path(None, tmp_path) is None
    assert resolve_ckpt_path("/some/file.ckpt", tmp_path) == "/some/file.ckpt"
    assert resolve_ckpt_path("last", tmp_path) is None  # first attempt: from scratch
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"x")
    os.utime(last, (1_000, 1_000))
    assert resolve_ckpt_path("last", tmp_path) == str(last)
    hpc = tmp_path / "hpc_ckpt_1.ckpt"  # written by Lightning on the SLURM requeue signal
    hpc.write_bytes(b"x")
    assert resolve_ckpt_path("last", tmp_path) == str(hpc)


def test_atomic_checkpoint_io_replaces_file(tmp_path):
    from nlic.scaleout import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "ck" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)
    io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    assert io.load_checkpoint(path)["global_step"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_wandb_run_id_persists_in_run_folder(tmp_path):
    from nlic.scaleout import WANDB_ID_FILE, attach_wandb_run_id

    cfg = _compose([*SMOKE])
    first = attach_wandb_run_id(cfg, tmp_path)
    assert (tmp_path / WANDB_ID_FILE).read_text().strip() == first
    assert cfg.logger.wandb.id == first and cfg.logger.wandb.resume == "allow"
    again = _compose([*SMOKE])
    assert attach_wandb_run_id(again, tmp_path) == first
    assert attach_wandb_run_id(_compose(["logger=csv"]), tmp_path / "csv_only") is None


def test_ddp_child_command_rebuilds_the_job_not_the_sweep(tmp_path):
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from nlic.scaleout import ddp_child_command

    cfg = _compose(["lmbda=0.01", "trainer=ddp_cpu"])
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "multi runs" / "it's=1,2" / "3")
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.job.config_name = "train"
        cfg.hydra.overrides.hydra = ["hydra.mode=MULTIRUN", "hydra.sweep.dir=/elsewhere", "hydra.job.chdir=false"]
    instance = HydraConfig.instance()
    saved = instance.cfg
    try:
        instance.set_config(cfg)
        cmd, cwd = ddp_child_command(1)
    finally:
        instance.cfg = saved
    assert cmd[:3] == [sys.executable, "-m", "nlic.cli.train"]
    assert "-m" not in cmd[3:] and "--multirun" not in cmd
    assert "lmbda=0.01" in cmd and "trainer=ddp_cpu" in cmd and "hydra.job.chdir=false" in cmd
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (run_dir,) = [c for c in cmd if c.startswith("hydra.run.dir=")]
    assert OverridesParser.create().parse_override(run_dir).value() == str(tmp_path / "multi runs" / "it's=1,2" / "3")
    assert not any(c.startswith(("hydra.sweep", "hydra.mode")) for c in cmd)
    assert "hydra.output_subdir=null" in cmd and cwd == str(tmp_path)


# ------------------------------------------------------------------------------ mixed precision
def test_entropy_models_stay_float32_under_bf16_autocast():
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional

    from nlic.scaleout import keep_likelihoods_fp32

    torch.manual_seed(0)
    eb = EntropyBottleneck(8).eval()
    z = torch.randn(2, 8, 6, 6) * 3
    ref = eb(z)[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        unprotected = eb(z)[1]
    assert keep_likelihoods_fp32(eb) == 1 and keep_likelihoods_fp32(eb) == 0  # idempotent
    with torch.autocast("cpu", dtype=torch.bfloat16):
        protected = eb(z)[1]
    assert protected.dtype == torch.float32
    assert torch.equal(protected, ref)
    assert not torch.equal(unprotected, ref)  # bf16 would have changed the rates
    gc = GaussianConditional(None).eval()
    keep_likelihoods_fp32(gc)
    y, scales = torch.randn(1, 4, 5, 5), torch.rand(1, 4, 5, 5) + 0.2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lk = gc(y, scales.bfloat16(), means=torch.zeros_like(y).bfloat16())[1]
    assert lk.dtype == torch.float32


def test_codec_rates_float32_under_bf16_autocast():
    from nlic.model_io import build_codec
    from nlic.scaleout import keep_likelihoods_fp32
    from tests.conftest import TINY_CONFIG

    torch.manual_seed(0)
    codec = build_codec(TINY_CONFIG).eval()
    keep_likelihoods_fp32(codec)
    x = torch.randint(0, 256, (1, 3, 64, 64)).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        est = codec.estimate(x, 1)
        out = codec(x, torch.tensor([2]))
    assert est["residual_bits"].dtype == est["latent_bits"].dtype == torch.float32
    assert out["residual_bits"].dtype == out["bias_bits"].dtype == torch.float32
    assert torch.isfinite(est["residual_bits"]).all() and est["x_rec"].dtype == torch.float32


def test_precision_helpers_run_without_compressai(monkeypatch):
    """A model without a lossy layer trains where CompressAI is not installed (a lent GPU machine):
    the helpers find no CompressAI entropy model instead of failing to import CompressAI."""
    from nlic.model_io import build_codec
    from nlic.scaleout.precision import compile_lossy_transforms, keep_likelihoods_fp32
    from tests.conftest import TINY_CONFIG

    codec = build_codec({"lossy": {"_target_": "nlic.codecs.none.NoLossyLayer"},
                         "residual": {**TINY_CONFIG["residual"], "feature_channels": 0}}).eval()
    monkeypatch.setitem(sys.modules, "compressai.entropy_models", None)  # import now raises ImportError
    with pytest.raises(ImportError):
        import compressai.entropy_models  # noqa: F401
    assert keep_likelihoods_fp32(codec) == 0
    assert compile_lossy_transforms(codec, backend="eager") == []  # no lossy transforms to compile


@pytest.mark.slow
def test_bf16_mixed_training_runs(tmp_path):
    logs = tmp_path / "logs"
    _run([*SMOKE, "trainer.precision=bf16-mixed", "logger=csv", "export=false", f"paths.log_dir={logs}"], cwd=tmp_path)
    assert len(list(logs.rglob("metrics.json"))) == 1


@pytest.mark.slow
def test_compiled_lossy_transforms_train_and_export(tmp_path):
    logs = tmp_path / "logs"
    _run([*SMOKE, "compile=true", "logger=csv", "evaluate.enabled=false", f"paths.log_dir={logs}"], cwd=tmp_path,
         timeout=900)
    from nlic.model_io import load_model

    (model,) = logs.rglob("model.pt")
    state = torch.load(model, map_location="cpu", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in k for k in state)
    load_model(model)  # the exported weights load into a plain (uncompiled) codec
