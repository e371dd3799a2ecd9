"""Scale-out helpers: DDP under Hydra, SLURM requeue, preemption-safe resume, W&B run ids, precision.

Everything here is wired through the Hydra configs (``conf/trainer``, ``conf/launcher``) and a few
calls in :func:`nlic.training.train`; see ``docs/cluster.md``.
"""

from nlic.scaleout.callbacks import ReplicaCheck, StepTimer
from nlic.scaleout.checkpoint import AtomicCheckpointIO, resolve_ckpt_path
from nlic.scaleout.ddp import HydraDDPStrategy, ddp_child_command
from nlic.scaleout.env import is_rank_zero_env
from nlic.scaleout.precision import compile_lossy_transforms, keep_likelihoods_fp32
from nlic.scaleout.slurm import RequeueSignalHandoff, slurm_environment
from nlic.scaleout.wandb_run import WANDB_ID_FILE, attach_wandb_run_id

__all__ = [
    "AtomicCheckpointIO",
    "HydraDDPStrategy",
    "ReplicaCheck",
    "RequeueSignalHandoff",
    "StepTimer",
    "WANDB_ID_FILE",
    "attach_wandb_run_id",
    "compile_lossy_transforms",
    "ddp_child_command",
    "is_rank_zero_env",
    "keep_likelihoods_fp32",
    "resolve_ckpt_path",
    "slurm_environment",
]
