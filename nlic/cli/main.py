"""``nlic``: the file codec and benchmark command line.

Each sub-command lives in its own module under :mod:`nlic.cli.commands` exposing
``register(subparsers)``; the parser's ``func`` default runs it.  User errors
(:class:`nlic.errors.NlicError`) and bad arguments become one line on stderr and a non-zero exit;
any other exception is reported as a one-line "internal error" (exit 1) unless ``NLIC_DEBUG=1``,
which re-raises it with its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from nlic.errors import NlicError

#: environment variable that turns the one-line internal-error report back into a traceback
DEBUG_ENV = "NLIC_DEBUG"


class _Parser(argparse.ArgumentParser):
    """Argument errors as ONE line (``nlic compress: error: ...``), exit status 2, no usage dump."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


#: sub-command modules, in the order they appear in --help
COMMANDS = ["compress", "decompress", "info", "bench", "report", "rd", "reencode", "export", "pack-shards"]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nlic", description="Learned near-lossless image codec: every sample within tau.",
        epilog="example:\n  nlic compress photo.png photo.nlic --tau 2 && nlic decompress photo.nlic restored.png\n\n"
               "nlic COMMAND --help shows each command's options and defaults; training: nlic-train --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"nlic.cli.commands.{name.replace('-', '_')}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # (a reader that went away shows here, not in the interpreter's last flush)
    except BrokenPipeError:  # `nlic info f.nlic | head`: the reader has what it wanted; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # (128 + SIGPIPE, as a shell reports a command its pipe's reader closed)
    except NlicError as err:
        print(f"nlic {args.command}: error: {_oneline(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"nlic {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug or an unforeseen condition: one line, unless debugging
        if _debug():
            raise
        print(f"nlic {args.command}: internal error: {type(err).__name__}: {_oneline(err)} "
              f"(set {DEBUG_ENV}=1 for a traceback)", file=sys.stderr)
        return 1
    return int(code or 0)


def _oneline(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
