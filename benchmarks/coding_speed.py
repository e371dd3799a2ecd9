"""Coding speed of a model on a folder of photos: start-up, encode and decode s/MP, peak memory.

Every measurement runs in a fresh process (as a user runs the CLI), one image at a time::

    python benchmarks/coding_speed.py /path/to/photos --tau 0,2 [--model model.pt] [--threads 2]

Prints a table per tau (mean s/MP over the images: encoded as the first image of a fresh process,
as ``nlic compress`` runs, and decoded in another fresh process, as ``nlic decompress`` runs; "warm":
the same image encoded and decoded again in the encoding process; "CPU": the CPU seconds of the
fresh processes' coding, all threads; total bytes, peak RSS of the coding processes)
and the start-up time of ``nlic --help``, ``nlic info`` and a header error.  JPEG-XL (effort 7)
and JPEG-LS are timed on the same images for reference (imagecodecs, in-process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from nlic.api import load_codec
from nlic.io import read_image
codec = load_codec(None if sys.argv[2] == "-" else sys.argv[2], jxl_tiles=sys.argv[5] == "1")
load_s = time.perf_counter() - t0
image = read_image(sys.argv[1])
tau = int(sys.argv[3])
t0, c0 = time.perf_counter(), time.process_time()
result = codec.compress(image.pixels, tau, alpha=image.alpha)
enc, enc_cpu = time.perf_counter() - t0, time.process_time() - c0
with open(sys.argv[4], "wb") as f:
    f.write(result.data)
t0 = time.perf_counter()  # again: a process that codes many images (compiled code loaded, tables built)
again = codec.compress(image.pixels, tau, alpha=image.alpha)
enc_warm = time.perf_counter() - t0
t0 = time.perf_counter()
codec.decompress(again.data)
dec_warm = time.perf_counter() - t0
assert again.data == result.data
print(json.dumps({"load_s": load_s, "encode_s": enc, "encode_cpu_s": enc_cpu, "encode_warm_s": enc_warm,
                  "decode_warm_s": dec_warm, "bytes": len(result.data),
                  "pixels": result.width * result.height, "max_error": result.max_error,
                  "stored_tiles": sum(v for k, v in result.tile_kinds.items() if k.startswith("stored")),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# the file decoded in a process of its own, as `nlic decompress` runs (compiled code not yet loaded)
DECODE_CHILD = r"""
import json, resource, sys, time
import numpy as np
from nlic.api import load_codec_for
from nlic.io import read_image
data = open(sys.argv[1], "rb").read()
codec = load_codec_for(data, None if sys.argv[2] == "-" else sys.argv[2])
t0, c0 = time.perf_counter(), time.process_time()
out = codec.decompress(data)
dec, dec_cpu = time.perf_counter() - t0, time.process_time() - c0
original = read_image(sys.argv[3]).pixels.astype(np.int16)
error = int(np.abs(out.pixels.astype(np.int16).reshape(original.shape) - original).max())
print(json.dumps({"decode_s": dec, "decode_cpu_s": dec_cpu, "decode_error": error,
                  "decode_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(cmd: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, res


def startup(env: dict) -> dict[str, float]:
    """Wall seconds of commands that must answer without loading torch (median of 3)."""
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "bad.nlic"
        bad.write_bytes(b"NLIC\x02" + bytes(60))
        cmds = {"nlic --help": ["--help"], "nlic compress --help": ["compress", "--help"],
                "nlic info (corrupt file)": ["info", str(bad)], "nlic decompress (corrupt file)":
                ["decompress", str(bad), str(Path(tmp) / "o.png")]}
        return {name: statistics.median(_run([sys.executable, "-m", "nlic.cli.main", *args], env)[0]
                                        for _ in range(3)) for name, args in cmds.items()}


def classic(path: Path, tau: int) -> dict[str, float]:
    import imagecodecs
    import numpy as np
    from PIL import Image

    img = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")))
    mp = img.shape[0] * img.shape[1] / 1e6
    out = {}
    codecs = {"jpegls": (lambda a: imagecodecs.jpegls_encode(a, level=tau), imagecodecs.jpegls_decode)}
    if tau == 0:
        codecs["jpegxl"] = (lambda a: imagecodecs.jpegxl_encode(a, lossless=True, effort=7), imagecodecs.jpegxl_decode)
    for name, (enc, dec) in codecs.items():
        t0 = time.perf_counter()
        data = enc(img)
        t1 = time.perf_counter()
        dec(data)
        t2 = time.perf_counter()
        out[name] = ((t1 - t0) / mp, (t2 - t1) / mp, 8 * len(data) / (mp * 1e6))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--model", default=None, help="model file (default: the shipped model)")
    p.add_argument("--tau", default="0,2")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the coding processes")
    p.add_argument("--limit", type=int, default=None, help="at most this many images")
    p.add_argument("--no-jxl-tiles", action="store_true", help="as nlic compress --no-jxl-tiles (no JPEG XL at tau 0)")
    p.add_argument("--json", type=Path, default=None, help="also write the raw rows here")
    args = p.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    images = sorted(q for q in args.folder.iterdir() if q.suffix.lower() in {".png", ".ppm", ".bmp", ".tif"})
    images = images[: args.limit] if args.limit else images
    print("start-up (fresh process, wall s):")
    for name, sec in startup(env).items():
        print(f"  {name:32s} {sec:.2f}")
    rows = []
    for tau in (int(t) for t in args.tau.split(",")):
        for path in images:
            with tempfile.TemporaryDirectory() as tmp:
                coded = Path(tmp) / "image.nlic"
                _, res = _run([sys.executable, "-c", CHILD, str(path), args.model or "-", str(tau), str(coded),
                                  str(int(not args.no_jxl_tiles))], env)
                if not res.returncode:
                    row = json.loads(res.stdout.strip().splitlines()[-1])
                    _, res = _run([sys.executable, "-c", DECODE_CHILD, str(coded), args.model or "-", str(path)], env)
            if res.returncode:
                print(f"  {path.name}: FAILED {res.stderr.strip().splitlines()[-1:]}")
                continue
            row.update(json.loads(res.stdout.strip().splitlines()[-1]))
            if row["decode_error"] > tau:
                print(f"  {path.name}: decoded with error {row['decode_error']} > tau {tau}")
                return 1
            row["peak_rss_mib"] = max(row["peak_rss_mib"], row.pop("decode_peak_rss_mib"))
            row.update(image=path.name, tau=tau, classic=classic(path, tau))
            rows.append(row)
            mp = row["pixels"] / 1e6
            print(f"  tau {tau} {path.name}: {8 * row['bytes'] / row['pixels']:.3f} bpp, "
                  f"encode {row['encode_s'] / mp:.2f} s/MP ({row['encode_warm_s'] / mp:.2f} warm), "
                  f"decode {row['decode_s'] / mp:.2f} s/MP ({row['decode_warm_s'] / mp:.2f} warm), "
                  f"CPU {row['encode_cpu_s'] / mp:.2f} / {row['decode_cpu_s'] / mp:.2f} s/MP, "
                  f"peak {row['peak_rss_mib']:.0f} MiB", flush=True)
    print(f"\n{len(images)} images, {args.threads} thread(s) per process")
    print("encode / decode: each in a fresh process (as the CLI runs); warm: again in the encoding process; CPU:")
    print("the fresh process's CPU seconds (all its threads: the work done, less swayed than wall time by what")
    print("else the machine runs, though cores that share caches and memory still slow each other)")
    print("| tau | codec | bpp | encode s/MP | decode s/MP | encode warm | decode warm | encode CPU | decode CPU "
          "| model load s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for tau in sorted({r["tau"] for r in rows}):
        rs = [r for r in rows if r["tau"] == tau]
        px = sum(r["pixels"] for r in rs)
        rate = {k: sum(r[k] for r in rs) / (px / 1e6) for k in ("encode_s", "decode_s", "encode_warm_s",
                                                                "decode_warm_s", "encode_cpu_s", "decode_cpu_s")}
        print(f"| {tau} | nlic | {8 * sum(r['bytes'] for r in rs) / px:.3f} | {rate['encode_s']:.2f} | "
              f"{rate['decode_s']:.2f} | {rate['encode_warm_s']:.2f} | {rate['decode_warm_s']:.2f} | "
              f"{rate['encode_cpu_s']:.2f} | {rate['decode_cpu_s']:.2f} | "
              f"{statistics.mean(r['load_s'] for r in rs):.2f} | {max(r['peak_rss_mib'] for r in rs):.0f} |")
        for name in rs[0]["classic"]:
            vals = [r["classic"][name] for r in rs]
            print(f"| {tau} | {name} | {statistics.mean(v[2] for v in vals):.3f} | "
                  f"{statistics.mean(v[0] for v in vals):.2f} | {statistics.mean(v[1] for v in vals):.2f} "
                  "| | | | | | |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
