"""Training throughput: images/s and seconds per step for 1 vs 2 CPU processes (DDP over gloo) and,
when CUDA is available, 1 GPU with/without bf16 and torch.compile (and DDP over 2 GPUs when there
are two).  Not a test: prints a table.

    python benchmarks/train_throughput.py                   # the default near-lossless model
    python benchmarks/train_throughput.py --preset smoke    # the tiny debug=smoke model
    python benchmarks/train_throughput.py --only cpu --batches 20 --batch-size 8

Each configuration is a real ``nlic-train`` run (``python -m nlic.cli.train``: Hydra config, Lightning
DDP, the full three-optimizer training step) with CSV logging, no checkpoints, no validation, no
export; :class:`nlic.scaleout.StepTimer` times every batch after a warm-up.  One "step" is one batch
of ``--batch-size`` images (the GLOBAL batch: each of N processes trains on batch/N), i.e. the main,
aux and bias-head optimizer steps together.  CPU threads are split between processes
(``OMP_NUM_THREADS = cores / processes``) so 1 and 2 processes use the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_config(name: str, overrides: list[str], threads: int, workdir: Path, warmup: int, timeout: int) -> dict:
    out = workdir / name.replace(" ", "_").replace("/", "_")
    args = [
        sys.executable, "-m", "nlic.cli.train", *overrides, "logger=csv", "export=false", "evaluate.enabled=false",
        "demo=false", "~callbacks.model_checkpoint", "+trainer.limit_val_batches=0", "trainer.max_steps=-1",
        "trainer.max_epochs=1", "+trainer.enable_progress_bar=false", f"hydra.run.dir={out}",
        "+callbacks.step_timer._target_=nlic.scaleout.StepTimer", f"+callbacks.step_timer.output_dir={out}",
        f"+callbacks.step_timer.warmup={warmup}",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), WANDB_MODE="offline")
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip() and "HYDRA_FULL_ERROR" not in ln]
        return {"name": name, "error": " | ".join(lines[-3:]), "wall_s": wall}
    result = json.loads((out / "throughput.json").read_text())
    return {"name": name, "wall_s": wall, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["default", "smoke"], default="default",
                        help="model size: the default near-lossless model or debug=smoke's tiny one")
    parser.add_argument("--batches", type=int, default=12, help="timed batches per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch (divisible by 2)")
    parser.add_argument("--crop", type=int, default=64, help="training crop size (multiple of 64)")
    parser.add_argument("--only", choices=["cpu", "gpu"], default=None)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="CPU cores to split between processes")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP threads per process for every configuration (default: cores / processes)")
    parser.add_argument("--timeout", type=int, default=1800)
    args = parser.parse_args()

    n = args.batches + args.warmup
    common = [
        f"data.batch_size={args.batch_size}", f"data.crop={args.crop}", f"data.epoch_size={n * args.batch_size}",
    ]
    if args.preset == "smoke":
        common = ["debug=smoke", *common]
    configs: list[tuple[str, list[str], int]] = []
    if args.only in (None, "cpu"):
        configs += [
            ("cpu 1 proc", ["trainer=cpu"], args.threads or args.cores),
            ("cpu 2 proc ddp", ["trainer=ddp_cpu"], args.threads or max(1, args.cores // 2)),
        ]
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        gpus = 0
    if args.only in (None, "gpu") and gpus:
        for precision in ("32-true", "bf16-mixed"):
            for compile_ in (False, True):
                configs.append((f"gpu 1 {precision}{' compile' if compile_ else ''}",
                                ["trainer=gpu", f"trainer.precision={precision}", f"compile={str(compile_).lower()}"],
                                args.cores))
        if gpus >= 2:
            configs.append(("gpu 2 ddp 32-true", ["trainer=ddp", "trainer.devices=2"], args.cores))
            configs.append(("gpu 2 ddp bf16-mixed", ["trainer=ddp", "trainer.devices=2",
                                                     "trainer.precision=bf16-mixed"], args.cores))
    elif args.only == "gpu":
        print("no CUDA device: nothing to run")

    rows = []
    with tempfile.TemporaryDirectory(prefix="nlic-throughput-") as tmp:
        for name, overrides, threads in configs:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            rows.append(run_config(name, [*common, *overrides], threads, Path(tmp), args.warmup, args.timeout))

    base = next((r for r in rows if r["name"] == "cpu 1 proc" and "error" not in r), None)
    print(f"\npreset={args.preset} global batch={args.batch_size} crop={args.crop} "
          f"timed batches={args.batches} (+{args.warmup} warm-up), cores={args.cores}")
    header = f"{'configuration':<28} {'threads':>7} {'s/step':>8} {'images/s':>9} {'vs 1 cpu':>8} {'wall s':>7}"
    print(header)
    print("-" * len(header))
    for (name, _, threads), r in zip(configs, rows):
        if "error" in r:
            print(f"{name:<28} {threads:>7}  failed: {r['error']}")
            continue
        rel = f"{r['images_per_s'] / base['images_per_s']:.2f}x" if base else "-"
        print(f"{name:<28} {threads:>7} {r['s_per_step_median']:>8.3f} {r['images_per_s']:>9.1f} {rel:>8} "
              f"{r['wall_s']:>7.1f}")


if __name__ == "__main__":
    main()
