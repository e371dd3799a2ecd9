"""``nlic decompress IN.nlic OUT.png`` or ``nlic decompress *.nlic -o DIR``: decode .nlic files.

The model is found from the id each file names (the shipped default model or the model store,
see :mod:`nlic.model_store`) unless ``--model`` is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nlic.cli.commands import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "decompress", "decode .nlic files to PNG (or TIFF / BMP)",
                    "nlic decompress photo.nlic photo.png\n  nlic decompress packed/ -o restored/ --jobs 2",
                    description="Decode one file (IN OUT) or many (files, folders, globs with -o DIR).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".nlic files, folders or globs; without -o: IN OUT")
    p.add_argument("-o", "--output-dir", type=Path, default=None, metavar="DIR",
                   help="write DIR/<name>.<format> for every input")
    p.add_argument("--format", choices=["png", "tif", "bmp"], default="png", help="output format with -o")
    p.add_argument("--model", type=Path, default=None,
                   help="the model that encoded the files (default: found by the id each file names)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the networks run (auto: a GPU when there is one)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.set_defaults(func=run)


def _read(source: Path) -> bytes:
    from nlic.bitstream.container import Container
    from nlic.errors import NlicError

    if not source.is_file():
        raise NlicError(f"input file not found: {source}")
    try:
        data = source.read_bytes()
    except OSError as err:
        raise NlicError(f"cannot read {source}: {err.strerror or err}") from None
    Container.from_bytes(data)  # validate the file before loading torch and a model
    return data


class _Codecs:
    """Models loaded on demand, one per id (a batch may hold files of several models)."""

    def __init__(self, model: Path | None, device: str = "cpu") -> None:
        self.model = model
        self.device = device
        self.loaded: dict[bytes, object] = {}

    def for_data(self, data: bytes):
        from nlic.api import load_codec_for
        from nlic.bitstream.container import Container

        key = Container.from_bytes(data).model_id
        if key not in self.loaded:
            self.loaded[key] = load_codec_for(data, self.model, self.device)
        return self.loaded[key]


def _codecs(model: Path | None, device: str = "cpu") -> _Codecs:
    return _Codecs(model, device)


def _decompress_one(force: bool, codecs: _Codecs, source: Path, target: Path):
    from nlic.cli.batch import Outcome
    from nlic.io import DecodedImage, check_not_same_file, write_image

    check_not_same_file(source, target)
    data = _read(source)
    out = codecs.for_data(data).decompress(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_image(target, DecodedImage(out.pixels, out.alpha, out.mode), force=force)
    h, w = out.pixels.shape[:2]
    return Outcome(str(source), str(target), True, in_bytes=len(data), out_bytes=target.stat().st_size,
                   pixels=h * w, extra={"mode": out.mode, "width": w, "height": h, "decode_s": out.decode_s})


def run(args: argparse.Namespace) -> int:
    from nlic.cli.commands.compress import check_model_arg
    from nlic.errors import NlicError
    from nlic.io import check_not_same_file, check_output_path, output_format

    if args.jobs < 1:
        raise NlicError(f"--jobs must be at least 1, got {args.jobs}")
    check_model_arg(args.model)
    if args.output_dir is None:
        if len(args.inputs) != 2:
            raise NlicError("give one input and one output (nlic decompress IN OUT), or several inputs with -o DIR")
        source, target = (Path(a) for a in args.inputs)
        output_format(target)
        check_not_same_file(source, target)
        check_output_path(target, force=args.force)
        _read(source)
        out = _decompress_one(args.force, _codecs(args.model, args.device), source, target)
        e = out.extra
        print(f"{source} -> {target}: {e['width']}x{e['height']} {e['mode']}, {e['decode_s']:.2f} s")
        return 0
    import functools
    import time

    from nlic.cli.batch import expand_inputs, plan_outputs, report, run_batch

    pairs = plan_outputs(expand_inputs(args.inputs, {".nlic"}), args.output_dir, f".{args.format}", args.force)
    t0 = time.perf_counter()
    outcomes = run_batch(pairs, functools.partial(_codecs, args.model, args.device),
                         functools.partial(_decompress_one, args.force), args.jobs, "decompress")
    return report(outcomes, time.perf_counter() - t0, coded=False)
