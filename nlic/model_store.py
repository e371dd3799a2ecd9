"""Models found by the id a .nlic file names: the shipped default, a user store, or ``--model``.

``nlic export`` and training copy every exported model into the store as ``<model id>.pt``, so a
file decodes without ``--model`` on the machine that made the model.  The store is
``$NLIC_MODEL_DIR`` if set, else ``$XDG_DATA_HOME/nlic/models`` (``~/.local/share/nlic/models``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from nlic.errors import ModelError

STORE_ENV = "NLIC_MODEL_DIR"
#: the trained model shipped inside the package (see README "Default model")
DEFAULT_MODEL = Path(__file__).parent / "assets" / "default_model.pt"
#: earlier shipped defaults, as ``<model id>.pt``: files they made still decode without --model
PREVIOUS_DEFAULTS = Path(__file__).parent / "assets" / "models"


def store_dir() -> Path:
    """The model store folder (not created until something is registered)."""
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "nlic" / "models"


def register(path: str | Path, model_id: bytes) -> Path:
    """Copy the model file ``path`` into the store as ``<model id>.pt`` (atomic; idempotent)."""
    target = store_dir() / f"{model_id.hex()}.pt"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    shutil.copyfile(path, tmp)
    os.replace(tmp, target)
    return target


def find_model(model_id: bytes, default_id: bytes | None = None) -> Path:
    """The model file whose id is ``model_id``: the shipped default (when ``default_id``, its id,
    matches), ``<store>/<id>.pt`` or an earlier shipped default; a clear error listing where it
    looked otherwise."""
    if default_id is not None and default_id == model_id and DEFAULT_MODEL.exists():
        return DEFAULT_MODEL
    stored = store_dir() / f"{model_id.hex()}.pt"
    if stored.is_file():
        return stored
    previous = PREVIOUS_DEFAULTS / f"{model_id.hex()}.pt"
    if previous.is_file():
        return previous
    raise ModelError(
        f"the file was encoded with model {model_id.hex()}, which is not here: not the shipped default model "
        f"({DEFAULT_MODEL}{'' if default_id is None else ', id ' + default_id.hex()}), not in the model store "
        f"({stored}; set {STORE_ENV} to use another store); pass the model that encoded it with --model"
    )
