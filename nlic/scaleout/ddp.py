"""DDP under Hydra without one run folder per rank.

With ``strategy: ddp`` Lightning re-launches the training script once per extra local rank.  Its
built-in Hydra support re-runs ``sys.argv`` with ``hydra.run.dir=<run dir>``, which breaks in three
common cases: a multirun (``-m``: every child would start a sweep of its own), a job started by a
Hydra launcher (``submitit_local``: ``sys.argv`` is submitit's runner, not ``nlic-train``) and a
resolved ``${now:...}`` run dir taken from ``hydra.run`` instead of the job's real output folder.

:class:`HydraDDPStrategy` starts the children as ``python -m nlic.cli.train <this job's overrides>
hydra.run.dir=<this job's output folder> hydra.output_subdir=null``: the children compose exactly
the parent job's config and write into the parent's folder (rank 0 owns ``.hydra/``, checkpoints,
the W&B run, ``model.pt``).  Under SLURM (srun starts every rank) or torchrun nothing is relaunched
and this is a plain :class:`~pytorch_lightning.strategies.DDPStrategy`.
"""

from __future__ import annotations

import re
import sys
from unittest import mock

from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers import subprocess_script
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

#: ``hydra.*`` overrides that describe the parent's launch, not the job: never handed to the children
_PARENT_ONLY = (
    "hydra.run.", "hydra.sweep.", "hydra.mode", "hydra.job.name", "hydra.job.num", "hydra.job.id",
    "hydra.output_subdir", "hydra.launcher", "hydra/launcher", "hydra.sweeper", "hydra/sweeper",
)


def _quote(value: str) -> str:
    """A Hydra-grammar quoted string (paths may hold ``=``, spaces, ``,``, quotes ...).

    Inside quotes Hydra unescapes only quotes, the backslashes right before a quote or the end, and
    ``\\${`` (no interpolation).
    """
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return "'" + escaped.replace("${", "\\${") + "'"


def ddp_child_command(local_rank: int, entry_module: str = "nlic.cli.train") -> tuple[list[str], str]:
    """Command line and working directory of DDP child ``local_rank`` of the running Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    cmd = [sys.executable, "-m", entry_module, f"--config-name={hc.job.config_name}"]
    for source in hc.runtime.config_sources:
        if source.provider == "command-line" and source.schema == "file":
            cmd.append(f"--config-dir={source.path}")
    cmd += list(hc.overrides.task)
    cmd += [o for o in hc.overrides.hydra if not o.lstrip("+~").startswith(_PARENT_ONLY)]
    cmd += [
        f"hydra.run.dir={_quote(hc.runtime.output_dir)}",
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return cmd, hc.runtime.cwd


class _HydraSubprocessLauncher(_SubprocessScriptLauncher):
    def __init__(self, *args, entry_module: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.entry_module = entry_module

    def _call_children_scripts(self) -> None:
        # Lightning builds the environment (MASTER_ADDR/PORT, ranks); only the command line is ours.
        def command(local_rank: int) -> tuple[list[str], str]:
            return ddp_child_command(local_rank, self.entry_module)

        with mock.patch.object(subprocess_script, "_hydra_subprocess_cmd", command):
            super()._call_children_scripts()


class HydraDDPStrategy(DDPStrategy):
    """:class:`DDPStrategy` whose child processes reuse the parent's Hydra job folder.

    Args:
        entry_module: module run with ``python -m`` for the children (the Hydra entry point).
        **kwargs: :class:`DDPStrategy` arguments (``find_unused_parameters``, ``process_group_backend``...).
    """

    def __init__(self, entry_module: str = "nlic.cli.train", **kwargs) -> None:
        super().__init__(**kwargs)
        self.entry_module = entry_module

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if isinstance(self._launcher, _SubprocessScriptLauncher):
            self._launcher = _HydraSubprocessLauncher(
                self.cluster_environment, self.num_processes, self.num_nodes, entry_module=self.entry_module
            )
