"""Many files at once: ``nlic compress A.png photos/ 'raw/*.png' -o OUT --jobs 2`` (and decompress).

The model is loaded once per worker process; ``--jobs N`` runs N workers.  Progress is a bar with
ETA in a terminal and one line per file in logs; a bad file is reported and the rest go on; the
run ends with a summary, and the exit status says whether every file succeeded.
"""

from __future__ import annotations

import glob
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nlic.errors import NlicError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif", ".tga", ".qoi"}


@dataclass
class Outcome:
    """What happened to one file."""

    source: str
    target: str
    ok: bool
    error: str = ""
    in_bytes: int = 0
    out_bytes: int = 0
    pixels: int = 0
    max_error: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def expand_inputs(items: Iterable[str], suffixes: set[str]) -> list[tuple[Path, Path]]:
    """Files, folders (recursively) and globs -> ``(file, name relative to its root)``, in order."""
    out: list[tuple[Path, Path]] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not files:
                raise NlicError(f"no input files ({', '.join(sorted(suffixes))}) in {path}")
            out += [(p, p.relative_to(path)) for p in files]
        elif path.is_file():
            out.append((path, Path(path.name)))
        else:
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                raise NlicError(f"input not found: {item}")
            out += [(p, Path(p.name)) for p in matches]
    return out


def plan_outputs(inputs: list[tuple[Path, Path]], out_dir: Path, suffix: str, force: bool) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs under ``out_dir`` (relative folders kept); refuses name clashes and,
    without ``force``, existing outputs, before any work starts."""
    pairs, seen = [], {}
    for path, rel in inputs:
        target = out_dir / rel.with_suffix(suffix)
        if target in seen:
            raise NlicError(f"{path} and {seen[target]} would both be written to {target}")
        seen[target] = path
        pairs.append((path, target))
    existing = [str(t) for _, t in pairs if t.exists()]
    if existing and not force:
        raise NlicError(f"{len(existing)} output(s) exist already (e.g. {existing[0]}); use --force to overwrite")
    return pairs


# ------------------------------------------------------------------ workers (one model each)
_WORKER: dict = {}


def _init_worker(loader: Callable[[], object]) -> None:
    import torch

    torch.set_num_threads(1)  # each worker takes one core; exact coding does not depend on it
    _WORKER["codec"] = loader()


def _run_one(task: Callable[[object, Path, Path], Outcome], source: Path, target: Path) -> Outcome:
    t0 = time.perf_counter()
    try:
        outcome = task(_WORKER["codec"], source, target)
    except NlicError as err:
        outcome = Outcome(str(source), str(target), False, " ".join(str(err).split()))
    outcome.seconds = time.perf_counter() - t0
    return outcome


def run_batch(pairs: list[tuple[Path, Path]], loader: Callable[[], object],
              task: Callable[[object, Path, Path], Outcome], jobs: int, verb: str) -> list[Outcome]:
    """Run ``task(codec, source, target)`` on every pair with ``jobs`` worker processes."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    outcomes: list[Outcome] = []
    progress = Progress(TextColumn(f"{verb}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, disable=not console.is_terminal)
    with progress:
        bar = progress.add_task(verb, total=len(pairs))

        def done(outcome: Outcome) -> None:
            outcomes.append(outcome)
            progress.advance(bar)
            line = (f"[{len(outcomes)}/{len(pairs)}] {outcome.source} -> {outcome.target}: "
                    + (_describe(outcome) if outcome.ok else f"FAILED: {outcome.error}"))
            progress.console.print(line, highlight=False, markup=False, soft_wrap=True) if console.is_terminal \
                else print(line, flush=True)

        if jobs <= 1:
            _init_worker(loader)
            for source, target in pairs:
                done(_run_one(task, source, target))
        else:
            ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                     initargs=(loader,)) as pool:
                futures: list[Future] = [pool.submit(_run_one, task, s, t) for s, t in pairs]
                for fut in futures:
                    done(fut.result())
    return outcomes


def _describe(o: Outcome) -> str:
    text = f"{o.out_bytes} bytes, {o.seconds:.2f} s"
    if o.pixels:
        text = f"{8 * (o.out_bytes if o.extra.get('coded') else o.in_bytes) / o.pixels:.3f} bpp, " + text
    if "tau" in o.extra:
        text += f", max error {o.max_error} (tau {o.extra['tau']})"
    return text


def summary(outcomes: list[Outcome], wall_s: float, coded: bool) -> str:
    """One paragraph: files, bytes in and out, bpp, ratio, worst error, time."""
    good = [o for o in outcomes if o.ok]
    failed = len(outcomes) - len(good)
    pixels = sum(o.pixels for o in good)
    bytes_in, bytes_out = sum(o.in_bytes for o in good), sum(o.out_bytes for o in good)
    coded_bytes = bytes_out if coded else bytes_in
    lines = [f"{len(good)} of {len(outcomes)} files done in {wall_s:.1f} s"
             + (f" ({len(good) / wall_s:.2f} files/s)" if wall_s > 0 and good else "")
             + (f"; {failed} FAILED" if failed else "")]
    if good:
        lines.append(f"input {bytes_in} bytes, output {bytes_out} bytes"
                     + (f", ratio {bytes_in / bytes_out:.3f}" if bytes_out else ""))
        if pixels:
            lines.append(f"{pixels / 1e6:.2f} MP, {8 * coded_bytes / pixels:.3f} bpp of the .nlic files, "
                         f"max error {max(o.max_error for o in good)}")
    return "\n".join(lines)


def report(outcomes: list[Outcome], wall_s: float, coded: bool) -> int:
    print(summary(outcomes, wall_s, coded), flush=True)
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        print(f"failed: {o.source}: {o.error}", file=sys.stderr)
    return 2 if failed else 0
