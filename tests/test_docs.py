"""The documentation runs as written: the README's Python API snippet and the docstring of nlic.api.

Both code a real photo with the shipped default model (``load_codec()``)."""

from __future__ import annotations

import doctest
import re
import textwrap

import numpy as np
import pytest
from PIL import Image

from tests._runs import REPO


def python_blocks(markdown: str) -> list[str]:
    """The ```python blocks of a markdown text (list-item indentation removed)."""
    return [textwrap.dedent(m.group(2)) for m in re.finditer(r"^( *)```python\n(.*?)^\1```", markdown, re.M | re.S)]


@pytest.fixture
def photo_png(tmp_path, monkeypatch) -> None:
    """``photo.png`` (a crop of scikit-image's astronaut) in the working directory, as the snippets expect."""
    from skimage import data

    Image.fromarray(np.ascontiguousarray(data.astronaut()[100:196, 150:278])).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)


def test_readme_api_snippet_runs(photo_png) -> None:
    (snippet,) = [b for b in python_blocks((REPO / "README.md").read_text()) if "nlic.api" in b]
    exec(compile(snippet, "README.md (Python API)", "exec"), {})


def test_api_docstring_runs(photo_png) -> None:
    import nlic.api

    result = doctest.testmod(nlic.api, optionflags=doctest.ELLIPSIS, raise_on_error=True)
    assert result.attempted >= 5 and result.failed == 0


def _subcommands() -> list[str]:
    from nlic.cli.main import COMMANDS

    return COMMANDS


@pytest.mark.parametrize("command", _subcommands())
def test_subcommand_help_shows_defaults_and_an_example(command, capsys) -> None:
    from nlic.cli.main import build_parser, main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert f"example: nlic {command} " in text
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        unset = action.default is None or action.default is False or action.default in ([], "==SUPPRESS==")
        if action.option_strings and not unset:
            assert f"(default: {action.default})" in text, action.dest


@pytest.mark.parametrize("entry, documented", [("nlic-train", "lmbda=FLOAT"), ("nlic-eval", "ckpt_path=FILE")])
def test_hydra_help_documents_options_with_values(entry, documented, tmp_path) -> None:
    from tests._runs import run_cli

    out = run_cli([entry, "--help"], tmp_path, timeout=120).stdout
    assert "== Documented options (value now) ==" in out and documented in out
    assert f"example:\n  {entry} " in out


def test_api_import_shows_no_third_party_warning(tmp_path) -> None:
    """``import nlic.api`` pulls in CompressAI and torch_geometric, whose torch.jit.script FutureWarning
    nlic filters (narrowly); Python's default warning filters would show it otherwise."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-W", "default", "-c", "import nlic.api"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Warning" not in proc.stderr, proc.stderr
