"""``nlic``: the file codec and benchmark command line.

Each sub-command lives in its own module under :mod:`nlic.cli.commands` exposing
``register(subparsers)``; the parser's ``func`` default runs it.  User errors
(:class:`nlic.errors.NlicError`) become one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nlic.errors import NlicError

#: sub-command modules, in the order they appear in --help
COMMANDS = ["compress", "decompress", "info", "bench", "report", "reencode"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlic", description="Learned near-lossless image codec: every sample within tau."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"nlic.cli.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"nlic.cli.commands.{name}":
                continue  # optional command not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except NlicError as err:
        print(f"nlic {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"nlic {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
