"""Third-party warnings a user of nlic cannot act on, filtered where they arise, narrowly (message and
module).  nlic's own warnings, and any other library warning, still show."""

from __future__ import annotations

import logging
import re
import warnings


class _DropMessage(logging.Filter):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


#: Lightning's advertisement for its hosted logger, printed at every Trainer start
_LITLOGGER_TIP = _DropMessage(r"^💡 Tip: .*litlogger")


def filter_import_warnings() -> None:
    """Warnings raised while nlic imports its dependencies (installed by ``import nlic``)."""
    # torch_geometric (imported by CompressAI) decorates functions with torch.jit.script at import time
    warnings.filterwarnings("ignore", message=r"`?torch\.jit\.script`? is deprecated", category=FutureWarning,
                            module=r"torch\.jit\._script")


def filter_third_party_warnings() -> None:
    """The import warnings and what Lightning prints during a training or evaluation job (idempotent).

    W&B's "The anonymous setting has no effect" is avoided at its source instead: see
    :class:`nlic.utils.loggers.WandbLogger`.
    """
    filter_import_warnings()
    # Lightning's own pytree helper still uses torch's deprecated LeafSpec
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"pytorch_lightning\.utilities\._pytree")
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if _LITLOGGER_TIP not in rank_zero.filters:
        rank_zero.addFilter(_LITLOGGER_TIP)
