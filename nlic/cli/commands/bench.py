"""``nlic bench FOLDER``: the learned codec and classic codecs side by side, verified and plotted.

Writes ``results.json`` (one row per codec, setting and image), ``results.md`` (means per codec and
tau), ``bpp_vs_tau.png``, ``psnr_vs_bpp.png`` and ``compressai_<codec>.json`` into ``--out``.
In results.json ``psnr`` is null for exact reconstructions (infinite PSNR); the unbounded
``jpegxl-lossy`` rows have ``tau`` null, ``distance`` set and ``bound_ok`` null.  Exit status 1 if
any codec broke its error bound.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nlic.cli.commands import add_command, add_wandb_arguments
from nlic.errors import NlicError

DEFAULT_TAUS = "0,1,2,3,4,5"
#: the codecs of nlic.bench.codecs (named here so --help does not import the codec stack; a test
#: checks the two lists agree)
DEFAULT_CODECS = "png,webp,jpegxl,jpeg2000,jpegls,jpegxl-lossy,nlic,nlic-learned"
DEFAULT_DISTANCES = "0.1,0.3,0.5,1.0"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` sub-command."""
    p = add_command(subparsers, "bench", "benchmark nlic against classic codecs on a folder of images",
                    "nlic bench data/kodak --codecs png,jpegls,jpegxl,nlic --tau 0-5 --out bench/ --jobs 2",
                    description=__doc__.split("\n\n", 1)[1])
    p.add_argument("folder", help="folder of images (png/jpg/bmp/tif/webp), read as 8-bit RGB")
    p.add_argument("--model", default=None, help="nlic model or checkpoint (default: the shipped model)")
    p.add_argument("--codecs", default=DEFAULT_CODECS, help="comma-separated codec names")
    p.add_argument("--tau", default=DEFAULT_TAUS, help="error bounds, e.g. 0,1,2 or 0-5")
    p.add_argument("--jxl-distances", default=DEFAULT_DISTANCES, help="distances for the unbounded jpegxl-lossy")
    p.add_argument("--out", default="bench_results", help="output directory")
    p.add_argument("--jobs", type=int, default=1, help="worker processes for the classic codecs")
    p.add_argument("--gray", action="store_true", help="code the grey version of every image (one channel)")
    p.add_argument("--jxl-effort", type=int, default=7, help="JPEG XL effort (1-10)")
    add_wandb_arguments(p, project="nlic-bench")
    p.set_defaults(func=run)


def parse_codecs(text: str) -> list[str]:
    """Comma-separated codec names -> list (unknown name: NlicError)."""
    from nlic.bench.codecs import get_codec

    names = list(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    if not names:
        raise NlicError("--codecs is empty")
    for name in names:
        get_codec(name)
    return names


def parse_taus(text: str) -> list[int]:
    """``0,1,2`` or ``0-5`` (or a mix) -> sorted unique taus in 0..255 (else NlicError)."""
    taus: set[int] = set()
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            taus.update(range(int(lo), int(hi) + 1) if sep else [int(part)])
    except ValueError:
        raise NlicError(f"bad --tau {text!r}: expected integers like 0,1,2 or 0-5") from None
    if not taus or min(taus) < 0 or max(taus) > 255:
        raise NlicError(f"bad --tau {text!r}: need at least one integer in 0..255")
    return sorted(taus)


def parse_distances(text: str) -> list[float]:
    """Comma-separated positive floats (else NlicError)."""
    try:
        values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise NlicError(f"bad --jxl-distances {text!r}: expected numbers like 0.1,0.5") from None
    if not values or min(values) <= 0 or max(values) > 25:
        raise NlicError(f"bad --jxl-distances {text!r}: need values in (0, 25]")
    return sorted(set(values))


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 if every bound held, 1 if any was violated."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from nlic.bench import report, runner
    from nlic.bench.codecs import CodecOptions

    start = time.perf_counter()
    console, err = Console(width=None if sys.stdout.isatty() else 120), Console(stderr=True)
    codecs, taus = parse_codecs(args.codecs), parse_taus(args.tau)
    distances = parse_distances(args.jxl_distances)
    if args.jobs < 1:
        raise NlicError(f"--jobs must be >= 1, got {args.jobs}")
    if not 1 <= args.jxl_effort <= 10:
        raise NlicError(f"--jxl-effort must be in 1..10, got {args.jxl_effort}")
    images, warnings = runner.find_images(args.folder)
    readable = []
    for path in images:
        try:
            runner.load_rgb(str(path))
            readable.append(path)
        except NlicError as e:
            warnings.append(f"skipping {path.name}: {e}")
    for w in warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)
    if not readable:
        raise NlicError(f"no readable images in {args.folder}")
    options = CodecOptions(jxl_effort=args.jxl_effort, model=args.model, gray=args.gray)
    tasks, notes = runner.plan(readable, codecs, taus, distances, options)
    for note in notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NlicError(f"cannot create output directory {out}: {e.strerror or e}") from None

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    done = 0
    with Progress(*columns, console=err, transient=True) as progress:
        bar = progress.add_task(f"{len(readable)} images", total=len(tasks))

        def on_row(row: runner.BenchRow) -> None:
            nonlocal done
            done += 1
            setting = f"tau={row.tau}" if row.distance is None else f"d={row.distance:g}"
            if not err.is_terminal:  # a log file or CI: no bar, one line per coded image instead
                figures = (f"{row.bpp:.3f} bpp, max err {row.max_err}, enc {row.enc_s:.2f} s, dec {row.dec_s:.2f} s"
                           if row.error is None else "failed")
                err.print(f"[{done}/{len(tasks)}] {row.codec} {setting} {row.image}: {figures}", highlight=False,
                          soft_wrap=True)
            if row.bound_ok is False:
                progress.console.print(
                    f"[bold red]{report.VIOLATION}[/]: {row.codec} {setting} {row.image} "
                    f"max error {row.max_err} {row.error or ''}", highlight=False,
                )  # fmt: skip
            elif row.error:
                progress.console.print(f"[red]{report.FAILED}[/]: {row.codec} {setting} {row.image}: {row.error}")
            progress.update(bar, advance=1, description=f"{row.codec} {setting}")

        rows = runner.run_bench(tasks, options, jobs=args.jobs, on_row=on_row)

    runner.write_results_json(rows, out / "results.json")
    summary = report.summarize(rows, channels=1 if args.gray else 3)
    title = f"nlic bench: {len(readable)} images from {args.folder}"
    report.write_reports(summary, out, title)
    console.print(_rich_table(summary, title))
    if args.wandb:
        report.log_wandb(summary, out, args.wandb_project)
    violated = any(s.violations for s in summary)
    if violated:
        err.print(f"[bold red]{report.VIOLATION}[/] by at least one codec: see {out / 'results.md'}")
    console.print(
        f"done in {time.perf_counter() - start:.1f} s: {len(rows)} encodes; results in {out}/ "
        f"(results.md, results.json, bpp_vs_tau.png, psnr_vs_bpp.png)",
        highlight=False,
    )
    return 1 if violated else 0


def _rich_table(summary: list, title: str):
    """The console version of results.md (violations in red)."""
    from rich.table import Table

    from nlic.bench.report import TABLE_HEADER, table_cells

    table = Table(title=title)
    for name in ["codec", "tau / d", *TABLE_HEADER, "bound"]:
        table.add_column(name, justify="left" if name in ("codec", "bound") else "right")
    for s in summary:
        status = f"[bold red]{s.status}[/]" if s.violations or s.failures else s.status
        table.add_row(s.codec, s.setting, *table_cells(s), status)
    return table
