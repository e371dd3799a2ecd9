"""SLURM requeue on timeout/preemption with hydra-submitit-launcher.

Two parties listen for the "your time is almost up" signal that ``sbatch --signal=USR2@90`` sends:

* submitit installs its own handler for ``SUBMITIT_PREEMPT_SIGNAL`` (default ``USR2``) before it
  calls the Hydra job.  It requeues, but saves no training state;
* Lightning's :class:`~lightning_fabric.plugins.environments.SLURMEnvironment` with
  ``auto_requeue=True`` saves ``hpc_ckpt_N.ckpt`` into the run folder, then ``scontrol requeue``\\ s
  the job, but only registers its handler when the signal has *no* handler yet.

:func:`slurm_environment` gives Lightning the same signal submitit asked SLURM for, and
:class:`RequeueSignalHandoff` hands that signal to Lightning for the duration of ``fit`` (and gives
it back to submitit afterwards).  The requeued job reruns the same Hydra job in the same folder;
``ckpt_path=last`` (set by ``launcher=slurm``) picks up the newest checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)


def signal_from_name(name: str | int | signal.Signals | None) -> signal.Signals:
    """``"USR2"``, ``"SIGUSR2"``, ``12`` or ``None`` (submitit's signal) -> :class:`signal.Signals`."""
    if name is None:
        name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    if isinstance(name, int):
        return signal.Signals(name)
    text = str(name).upper()
    return signal.Signals[text if text.startswith("SIG") else f"SIG{text}"]


def slurm_environment(auto_requeue: bool = True, requeue_signal: str | int | None = None) -> SLURMEnvironment:
    """Lightning's SLURM cluster environment listening on ``requeue_signal`` (names work in YAML)."""
    return SLURMEnvironment(auto_requeue=auto_requeue, requeue_signal=signal_from_name(requeue_signal))


def _cluster_environment(trainer: pl.Trainer):
    env = getattr(trainer.strategy, "cluster_environment", None)
    if env is None:  # single-device strategies keep it on the accelerator connector only
        env = getattr(getattr(trainer, "_accelerator_connector", None), "cluster_environment", None)
    return env


class RequeueSignalHandoff(pl.Callback):
    """Let Lightning's SLURM auto-requeue handler own the requeue signal while ``fit`` runs.

    Lightning skips registering its handler when one is already installed, which submitit always
    does, so without this the job would be requeued with no fresh checkpoint.  Runs in ``setup``
    (just before Lightning registers its handlers) and restores the previous handler in
    ``teardown``.  Does nothing outside SLURM or with ``auto_requeue=False``.
    """

    def __init__(self) -> None:
        self._saved: tuple[signal.Signals, object] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        env = _cluster_environment(trainer)
        if not (isinstance(env, SLURMEnvironment) and env.auto_requeue and env.requeue_signal is not None):
            return
        if threading.current_thread() is not threading.main_thread():
            return
        sig = env.requeue_signal
        current = signal.getsignal(sig)
        if current in (None, signal.SIG_DFL):
            return
        self._saved = (sig, current)
        signal.signal(sig, signal.SIG_DFL)
        log.info("%s: Lightning checkpoints and requeues on %s during fit", type(self).__name__, sig.name)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._saved is None or threading.current_thread() is not threading.main_thread():
            return
        sig, handler = self._saved
        if signal.getsignal(sig) in (None, signal.SIG_DFL):
            signal.signal(sig, handler)
        self._saved = None
