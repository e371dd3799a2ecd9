"""Build hook: wheels (``pip install .``, ``pip wheel``) carry the top-level ``conf/`` and ``sweeps/``
as ``nlic/_project/``, where :mod:`nlic.project` finds them when nlic is not run from a checkout.
Everything else about the package is in pyproject.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROJECT_DIRS = ("conf", "sweeps")


def _skip(folder: str, names: list[str]) -> list[str]:
    # conf/local/default.yaml holds one machine's cluster settings (git-ignored): never ship it
    local = Path(folder).name == "local"
    return [n for n in names if n == "__pycache__" or (local and n == "default.yaml")]


class BuildWithProject(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the checkout's own folders
            return
        for name in PROJECT_DIRS:
            target = Path(self.build_lib) / "nlic" / "_project" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(ROOT / name, target, ignore=_skip)


setup(cmdclass={"build_py": BuildWithProject})
