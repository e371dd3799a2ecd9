#!/usr/bin/env bash
# A GPU stage of the default model on a machine with no network (experiment=default_model_gpu).
#
#   benchmarks/device_stage.sh prepare TRAIN_DIR HELD_OUT_DIR   # here: wheels and photos into .device_data/
#   benchmarks/device_stage.sh run OUT_DIR [OVERRIDES...]        # there, from the repository root
#
# `prepare` fetches what such a machine lacks (pure-Python wheels of Hydra and OmegaConf; PyTorch,
# Lightning, NumPy, numba and SciPy are expected there) and copies the training and held-out photos
# into the ignored folder .device_data/ (carry it with the working tree; the photos are most of it:
# keep the whole under the transfer limit).  `run` installs the wheels and nlic without network,
# trains (CSV logs, no W&B, no real-coding evaluation: constriction and imagecodecs are not needed)
# and copies the model and its logs into OUT_DIR (a handful of files).  Back here:
#   nlic export OUT_DIR/model.pt new_default.pt --gray-heads nlic/assets/default_model.pt
#   nlic bench HELD_OUT_DIR --model new_default.pt --codecs jpegxl,jpegls,nlic --tau 0-5
set -euo pipefail
cd "$(dirname "$0")/.."
data=.device_data

case "${1:-}" in
  prepare)
    [ $# -eq 3 ] || { echo "usage: $0 prepare TRAIN_DIR HELD_OUT_DIR" >&2; exit 2; }
    for d in "$2" "$3"; do [ -d "$d" ] || { echo "$0: no such folder: $d" >&2; exit 2; }; done
    rm -rf "$data" && mkdir -p "$data/wheels" "$data/train" "$data/held_out"
    # the versions this machine runs (and tests) nlic with
    version() { python -c "from importlib.metadata import version; print(version('$1'))"; }
    python -m pip download -q --python-version 3.12 --only-binary=:all: --no-deps -d "$data/wheels" \
      "hydra-core==$(version hydra-core)" "omegaconf==$(version omegaconf)"
    python -m pip wheel -q --no-deps -w "$data/wheels" \
      "antlr4-python3-runtime==$(version antlr4-python3-runtime)"  # (published as an sdist only)
    find "$2" -maxdepth 1 -type f \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.webp' \) -exec cp {} "$data/train/" \;
    find "$3" -maxdepth 1 -type f \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.webp' \) -exec cp {} "$data/held_out/" \;
    du -sh "$data"/*; du -sh "$data"
    ;;
  run)
    [ $# -ge 2 ] || { echo "usage: $0 run OUT_DIR [OVERRIDES...]" >&2; exit 2; }
    out=$2; shift 2
    [ -d "$data/wheels" ] || { echo "$0: $data/ is missing: run '$0 prepare' here and carry it" >&2; exit 2; }
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps "$data"/wheels/*.whl
    python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    run_dir=$(mktemp -d)
    export WANDB_MODE=offline PYTHONUNBUFFERED=1
    # (python3 -m: the console script may not be on that machine's PATH)
    python3 -m nlic.cli.train experiment=default_model_gpu data.root="$data/train" data.val_root="$data/held_out" \
      hydra.run.dir="$run_dir" "$@" 2>&1 | tee "$out/train.log"
    cp "$run_dir/model.pt" "$run_dir/metrics.json" "$out/"
    cp "$run_dir/.hydra/config.yaml" "$out/config.yaml"
    find "$run_dir" -name metrics.csv -exec cp {} "$out/metrics.csv" \;
    ls -l "$out"
    ;;
  *)
    echo "usage: $0 prepare TRAIN_DIR HELD_OUT_DIR | $0 run OUT_DIR [OVERRIDES...]" >&2
    exit 2
    ;;
esac
