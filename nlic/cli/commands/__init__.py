"""Sub-commands of ``nlic``; each module exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse
import textwrap


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` with every option's default (unset ones, None/False/[], are explained in their help)
    and the description and example kept as written."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        # not at hyphens: codec names and options (jpegxl-lossy, --no-jxl-tiles) stay whole to copy
        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False,
                             break_long_words=False)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def add_command(subparsers: argparse._SubParsersAction, name: str, help: str, example: str,
                description: str | None = None) -> argparse.ArgumentParser:
    """A sub-command parser whose ``--help`` shows defaults and ends with ``example``; a one-line
    ``description`` (default: ``help``) is wrapped, a multi-line one kept as written."""
    description = description or help[0].upper() + help[1:] + "."
    if "\n" not in description:
        description = textwrap.fill(description, 100)
    return subparsers.add_parser(name, help=help, description=description, epilog=f"example:\n  {example}",
                                 formatter_class=HelpFormatter)


def add_wandb_arguments(p: argparse.ArgumentParser, project: str = "nlic", group: bool = False) -> None:
    """``--wandb`` (offline unless ``WANDB_MODE`` says otherwise), ``--wandb-project`` and, for
    commands whose runs belong together, ``--wandb-group``."""
    p.add_argument("--wandb", action="store_true", help="log tables and plots to W&B (offline by default)")
    p.add_argument("--wandb-project", default=project, help="W&B project")
    if group:
        p.add_argument("--wandb-group", default=None, help="W&B group (e.g. the sweep name)")
