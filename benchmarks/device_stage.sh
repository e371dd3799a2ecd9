#!/usr/bin/env bash
# GPU stages of the default model on a machine with no network (experiment=default_model_gpu and
# its relatives), several runs side by side on the one GPU.
#
#   benchmarks/device_stage.sh prepare TRAIN_DIR HELD_OUT_DIR   # here: wheels and photos into .device_data/
#   benchmarks/device_stage.sh run OUT_DIR [SPEC...]             # there, from the repository root
#
# `prepare` fetches what such a machine lacks (pure-Python wheels of Hydra and OmegaConf; PyTorch,
# Lightning, NumPy, numba and SciPy are expected there) and copies the training and held-out photos
# into the ignored folder .device_data/ (carry it with the working tree; the photos are most of it:
# keep the whole under the transfer limit).  `run` installs the wheels and nlic without network and
# trains one run per SPEC, all at once ("LABEL:EXPERIMENT [OVERRIDE...]", one quoted word; default
# "colour:default_model_gpu"; CSV logs, no W&B, no real-coding evaluation: constriction and
# imagecodecs are not needed).  Each run leaves OUT_DIR/LABEL.log (written as it goes) and
# OUT_DIR/LABEL.tar (model.pt, metrics, config, best checkpoint; made when it ends).  Back here:
#   tar -xf OUT_DIR/colour.tar -C colour && nlic export colour/model.pt new.pt --gray-heads GREY/model.pt
#   nlic bench HELD_OUT_DIR --model new.pt --codecs jpegxl,jpegls,nlic --tau 0-5
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
    [ $# -ge 2 ] || { echo "usage: $0 run OUT_DIR [SPEC...]" >&2; exit 2; }
    out=$2; shift 2
    [ $# -ge 1 ] || set -- "colour:default_model_gpu"
    [ -d "$data/wheels" ] || { echo "$0: $data/ is missing: run '$0 prepare' here and carry it" >&2; exit 2; }
    mkdir -p "$out" && out=$(cd "$out" && pwd)
    python3 -m pip install -q --no-index --no-deps "$data"/wheels/*.whl
    python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    export WANDB_MODE=offline PYTHONUNBUFFERED=1
    workers=$(( $(nproc) / $# - 1 )); [ "$workers" -ge 1 ] || workers=1
    pids=()
    for spec in "$@"; do
      label=${spec%%:*}; rest=${spec#*:}
      read -r -a words <<< "$rest"  # EXPERIMENT OVERRIDE...
      run_dir=$(mktemp -d)
      (
        # (python3 -m: the console script may not be on that machine's PATH)
        rc=0
        python3 -m nlic.cli.train experiment="${words[0]}" data.root="$data/train" data.val_root="$data/held_out" \
          data.num_workers="$workers" hydra.run.dir="$run_dir" "${words[@]:1}" > "$out/$label.log" 2>&1 || rc=$?
        echo "exit status $rc" >> "$out/$label.log"
        cp "$run_dir/.hydra/config.yaml" "$run_dir/config.yaml" 2>/dev/null || true
        find "$run_dir" -name metrics.csv -exec cp {} "$run_dir/metrics.csv" \; 2>/dev/null || true
        (cd "$run_dir" && tar -cf "$out/$label.tar" $(ls model.pt metrics.json config.yaml metrics.csv \
          checkpoints/epoch*.ckpt 2>/dev/null))
      ) &
      pids+=($!)
    done
    status=0
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    ls -l "$out"
    exit $status
    ;;
  *)
    echo "usage: $0 prepare TRAIN_DIR HELD_OUT_DIR | $0 run OUT_DIR [SPEC...]" >&2
    exit 2
    ;;
esac
