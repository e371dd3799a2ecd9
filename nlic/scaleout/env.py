"""Rank detection from the environment, usable before a Trainer (and its process group) exists."""

from __future__ import annotations

import os

#: variables set by torchrun, SLURM (srun) and Lightning's DDP launcher for the non-zero ranks
_RANK_VARS = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")


def is_rank_zero_env() -> bool:
    """True unless the environment says this process is a non-zero DDP rank.

    Lightning only learns the global rank once ``trainer.fit`` sets up the strategy; code that runs
    before (writing files into the run folder, creating the W&B run) uses this instead.  ``NODE_RANK``
    counts too: the first process of node 1 has ``LOCAL_RANK`` 0 but is not the global rank 0.
    """
    for var in _RANK_VARS:
        value = os.environ.get(var)
        if value not in (None, "", "0"):
            try:
                if int(value) != 0:
                    return False
            except ValueError:
                continue
    return True
