"""Where the Hydra config tree (``conf/``) and the sweeps (``sweeps/``) are, and the resolvers the
configs use.  Importing this module registers the resolvers (every Hydra entry point does).

A checkout (editable install, ``PYTHONPATH``) uses its own top-level ``conf/`` and ``sweeps/``; a
regular install (``pip install .``, a wheel) uses the copies ``setup.py`` packs into
``nlic/_project/``.  ``NLIC_CONFIG_DIR`` (a ``conf/`` tree) and ``NLIC_SWEEPS_ROOT`` (a folder
holding ``sweeps/``) point elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from nlic.errors import NlicError

#: the ``nlic`` package folder (``${nlic_package:}`` in configs: shipped assets live below it)
PACKAGE_DIR = Path(__file__).resolve().parent
#: where wheels carry ``conf/`` and ``sweeps/`` (see setup.py)
PACKAGED_PROJECT = PACKAGE_DIR / "_project"


def project_root() -> Path:
    """The folder holding ``conf/`` and ``sweeps/``: the checkout first, else the packaged copy."""
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "conf" / "train.yaml").is_file():
        return checkout
    if (PACKAGED_PROJECT / "conf" / "train.yaml").is_file():
        return PACKAGED_PROJECT
    raise NlicError(f"no Hydra config tree: neither {checkout / 'conf'} nor {PACKAGED_PROJECT / 'conf'} exists "
                    "(reinstall nlic, or set NLIC_CONFIG_DIR)")


def config_dir() -> str:
    """The ``conf/`` tree of ``nlic-train`` / ``nlic-eval`` (``NLIC_CONFIG_DIR`` overrides it)."""
    env = os.environ.get("NLIC_CONFIG_DIR")
    return str(Path(env).resolve()) if env else str(project_root() / "conf")


def sweeps_root() -> str:
    """The folder holding ``sweeps/`` (``NLIC_SWEEPS_ROOT`` overrides it; default: beside ``conf/``).

    ``conf/train.yaml`` adds it to Hydra's search path as ``file://${nlic_root:}``, so
    ``nlic-train -m +sweeps=NAME`` finds ``sweeps/NAME.yaml`` from any working directory.
    """
    env = os.environ.get("NLIC_SWEEPS_ROOT")
    return str(Path(env).resolve()) if env else str(Path(config_dir()).parent)


def working_dir() -> str:
    """Hydra's ``runtime.cwd`` inside a job; before one exists (a multirun resolves ``hydra.sweep.dir``
    before it starts any job, when ``${hydra:runtime.cwd}`` cannot resolve yet) the process's."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.cwd if HydraConfig.initialized() else os.getcwd()


OmegaConf.register_new_resolver("nlic_root", sweeps_root, replace=True)
OmegaConf.register_new_resolver("nlic_package", lambda: str(PACKAGE_DIR), replace=True)
OmegaConf.register_new_resolver("nlic_cwd", working_dir, replace=True)
