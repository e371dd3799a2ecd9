"""Data-loader throughput per ``data.mode`` against the training step rate of the default model on
CPU.  Not a test: prints a table.

    python benchmarks/data_throughput.py --root ../shared/data/train
    python benchmarks/data_throughput.py --root DIR --batches 20 --modes lazy,shards --workers 2

The data settings are those of ``experiment=default_model`` (crop, batch, grey crops, held-out
validation photos, ``num_workers``) with ``data.root=--root``.  Every configuration runs in a fresh
process (``OMP_NUM_THREADS=1``) that reports: setup time; time to first batch (from the start of
setup, so it includes memory mode's up-front decoding and the shard buffer's fill); crops/s over
``--batches`` batches after the first, and over their second half alone (a warmer cache); "vs step":
crops/s over the crops/s one training step consumes (with ``num_workers=0`` loading runs between
steps, so its time adds to the step's); peak resident memory of the process (``ru_maxrss``), that
peak minus the memory after imports ("data MB": training images or cache, the decoded validation
photos, decoding buffers) and, with ``--workers``, the largest worker's peak (``VmHWM``, shared pages
included).  Lazy and shard modes also run with a small cache (``--small-cache-mb``): the regime of a
dataset much larger than the cache.  Shards are packed from ``--root`` into a temporary folder first.
The step rate is that of the default model's forward + backward + Adam step on one thread, and the
whole-image validation cost that of one estimate of a 1280 x 720 image.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _status_mb(field: str, pid: int | str = "self") -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _compose(root: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from nlic.cli._hydra import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train",
                       overrides=["experiment=default_model", f"data.root={root}", "logger=none", *overrides])


def child_data(args: argparse.Namespace) -> dict:
    import gc

    import torch  # noqa: F401  (imported before the baseline, as in training)
    from hydra.utils import instantiate

    import nlic.data.datamodule  # noqa: F401

    overrides = [f"data.mode={args.mode}"]
    if args.workers is not None:
        overrides.append(f"data.num_workers={args.workers}")
    if args.cache_mb is not None:
        overrides.append(f"data.cache_mb={args.cache_mb}")
    cfg = _compose(args.data_root, overrides)
    base = _status_mb("VmRSS")
    t0 = time.perf_counter()
    dm = instantiate(cfg.data)
    dm.setup("fit")
    setup_s = time.perf_counter() - t0
    loader = dm.train_loader()
    it = iter(loader)
    first = next(it)
    first_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    n, half, t_half = 0, args.batches // 2, None
    for i in range(args.batches):
        if i == half:
            t_half, n_half = time.perf_counter(), n
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        n += batch.shape[0]
    end = time.perf_counter()
    rate, steady = n / (end - t1), (n - n_half) / (end - t_half)
    # DataLoader workers: their own peak resident memory (fork: shared pages of the parent included)
    workers = getattr(it, "_workers", [])
    worker_peak = max((_status_mb("VmHWM", w.pid) for w in workers), default=float("nan"))
    del it, loader
    gc.collect()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"setup_s": setup_s, "first_batch_s": first_s, "crops_per_s": rate, "steady_crops_per_s": steady,
            "batch": int(first.shape[0]), "peak_mb": peak, "base_mb": base, "data_mb": peak - base,
            "worker_peak_mb": worker_peak}


def child_step(args: argparse.Namespace) -> dict:
    import torch
    from hydra.utils import instantiate

    torch.set_num_threads(1)
    cfg = _compose(args.data_root, [])
    module = instantiate(cfg.model)
    codec = module.codec.train()
    opt = torch.optim.Adam(codec.parameters(), lr=1e-4)
    b, c = cfg.data.batch_size, cfg.data.crop
    x = torch.randint(0, 256, (b, 3, c, c)).float()
    times = []
    for i in range(args.steps + 2):
        t = time.perf_counter()
        out = codec(x)
        loss = module._rates(out, x)["bpp"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    step = sorted(times)[len(times) // 2]
    # whole-image validation (the new default): one estimate of a 1280 x 720 photo at tau 0
    from nlic.system import pad_to_multiple

    codec.eval()
    img = torch.randint(0, 256, (1, 3, 720, 1280)).float()
    val_s = float("inf")
    for _ in range(2):  # the first call includes one-off warm-up
        t = time.perf_counter()
        codec.estimate(pad_to_multiple(img, codec.pad_multiple), 0)
        val_s = min(val_s, time.perf_counter() - t)
    return {"s_per_step": step, "batch": b, "crops_per_s": b / step, "val_s_per_photo": val_s,
            "epoch_steps": cfg.data.epoch_size // b, "val_photos": len(cfg.data.val_files or []),
            "val_taus": len(cfg.model.val_taus)}


def run_child(kind: str, extra: list[str], env: dict, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        return {"error": " | ".join(proc.stderr.strip().splitlines()[-3:])}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "train"), help="image folder")
    parser.add_argument("--modes", default="memory,lazy,shards")
    parser.add_argument("--batches", type=int, default=60, help="timed batches per configuration")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the config's)")
    parser.add_argument("--small-cache-mb", type=float, default=32.0,
                        help="also run lazy and shards with this cache (0: skip)")
    parser.add_argument("--shard-size-mb", type=float, default=16.0)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--child", choices=["data", "step"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--cache-mb", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data-root", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child_data(args) if args.child == "data" else child_step(args)))
        return

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    workers = [] if args.workers is None else ["--workers", str(args.workers)]
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory(prefix="nlic-shards-") as tmp:
        rows = []
        configs: list[tuple[str, str, float | None]] = [(m, m, None) for m in modes]
        if args.small_cache_mb:
            configs += [(f"{m} ({args.small_cache_mb:g} MB cache)", m, args.small_cache_mb)
                        for m in modes if m in ("lazy", "shards")]
        pack_s = None
        if "shards" in modes:
            sys.path.insert(0, str(REPO))
            from nlic.data.shards import pack_folder

            t = time.perf_counter()
            summary = pack_folder(args.root, Path(tmp) / "shards", args.shard_size_mb)
            pack_s = time.perf_counter() - t
            print(f"packed {summary['images']} images ({summary['bytes'] / 1e6:.0f} MB) into {summary['shards']} "
                  f"shards of {args.shard_size_mb:g} MB in {pack_s:.1f} s", file=sys.stderr)
        for name, mode, cache in configs:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            root = str(Path(tmp) / "shards") if mode == "shards" else args.root
            extra = ["--mode", mode, "--data-root", root, "--batches", str(args.batches), *workers]
            if cache is not None:
                extra += ["--cache-mb", str(cache)]
            rows.append((name, run_child("data", extra, env, args.timeout)))
        print("running training step ...", file=sys.stderr, flush=True)
        step = run_child("step", ["--data-root", args.root, "--steps", str(args.steps)], env, args.timeout)

    print(f"\nroot={args.root}  experiment=default_model  batches={args.batches}  "
          f"workers={args.workers if args.workers is not None else 'config'}  OMP_NUM_THREADS=1")
    header = (f"{'mode':<26} {'setup s':>8} {'1st batch s':>11} {'crops/s':>8} {'2nd half':>8} {'vs step':>8} "
              f"{'peak MB':>8} {'data MB':>8} {'worker MB':>9}")
    print(header)
    print("-" * len(header))
    need = step.get("crops_per_s")
    for name, r in rows:
        if "error" in r:
            print(f"{name:<26} failed: {r['error']}")
            continue
        vs = f"{r['crops_per_s'] / need:.1f}x" if need else "-"
        print(f"{name:<26} {r['setup_s']:>8.2f} {r['first_batch_s']:>11.2f} {r['crops_per_s']:>8.0f} "
              f"{r['steady_crops_per_s']:>8.0f} {vs:>8} {r['peak_mb']:>8.0f} {r['data_mb']:>8.0f} "
              f"{'-' if r['worker_peak_mb'] != r['worker_peak_mb'] else round(r['worker_peak_mb']):>9}")
    if "error" in step:
        print(f"training step failed: {step['error']}")
    else:
        print(f"training step (default model, batch {step['batch']}, 1 thread): {step['s_per_step']:.3f} s "
              f"= {step['crops_per_s']:.0f} crops/s consumed")
        val = step["val_s_per_photo"] * step["val_photos"] * step["val_taus"]
        print(f"whole-image validation: {step['val_s_per_photo']:.2f} s per 1280x720 photo and tau; "
              f"{step['val_photos']} photos x {step['val_taus']} taus = {val:.0f} s per validation vs "
              f"{step['epoch_steps'] * step['s_per_step']:.0f} s for an epoch's {step['epoch_steps']} steps")
    if pack_s is not None:
        print(f"packing the shards: {pack_s:.1f} s")


if __name__ == "__main__":
    main()
