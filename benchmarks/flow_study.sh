#!/usr/bin/env bash
# The flow-vs-autoencoder study of docs/flow.md, end to end, from a folder of training photos:
#   1. equal-budget lossy-only training of the flow (one model, every rate) and of mean_scale
#   2. near-lossless systems on top of each (lossy layer seeded from step 1), equal budget
#   3. RD points by real coding (flow at several steps, mean_scale, JPEG, JPEG-XL)
#   4. re-encoding study (10 generations) for flow, mean_scale, JPEG and JPEG-XL
#   5. near-lossless bpp per tau of both systems (eval_results.md of step 2)
#
#   bash benchmarks/flow_study.sh TRAIN_DIR TEST_DIR [OUT_DIR] [MINUTES]
# MINUTES = training time per run (default 45); add trainer=gpu etc. through NLIC_TRAIN_ARGS.
set -euo pipefail
train=${1:?TRAIN_DIR}; test=${2:?TEST_DIR}; out=${3:-outputs/flow_study}; minutes=${4:-45}
budget=$(printf "00:%02d:%02d:00" $((minutes / 60)) $((minutes % 60)))
extra=${NLIC_TRAIN_ARGS:-}
mkdir -p "$out"

# shellcheck disable=SC2086
nlic-train experiment=lossy_rd lossy=flow data.root="$train" trainer.max_time="$budget" \
  evaluate.root="$test" hydra.run.dir="$out/flow_lossy" $extra
# shellcheck disable=SC2086
nlic-train experiment=lossy_rd lossy=mean_scale lossy.N=128 lossy.M=192 lmbda=0.0067 data.root="$train" \
  trainer.max_time="$budget" evaluate.root="$test" hydra.run.dir="$out/ms_lossy" $extra
# shellcheck disable=SC2086
nlic-train experiment=near_lossless_on_lossy lossy=flow init_weights="$out/flow_lossy/lossy_model.pt" \
  data.root="$train" trainer.max_time="$budget" evaluate.root="$test" hydra.run.dir="$out/flow_nl" $extra
# shellcheck disable=SC2086
nlic-train experiment=near_lossless_on_lossy lossy=mean_scale lossy.N=128 lossy.M=192 \
  init_weights="$out/ms_lossy/lossy_model.pt" data.root="$train" trainer.max_time="$budget" \
  evaluate.root="$test" hydra.run.dir="$out/ms_nl" $extra

nlic rd "$test" --model flow="$out/flow_lossy/lossy_model.pt" --model mean_scale="$out/ms_lossy/lossy_model.pt" \
  --points flow=0.005,0.01,0.02,0.04,0.08,0.16 --out "$out/rd" --wandb --wandb-group flow_study
for img in "$test"/*; do
  nlic reencode "$img" --generations 10 --codecs flow,mean_scale,jpeg,jpegxl \
    --flow-model "$out/flow_lossy/lossy_model.pt" --mean-scale-model "$out/ms_lossy/lossy_model.pt" \
    --quality jpeg=90,jpegxl=1.0,flow=0.02 --out "$out/reencode/$(basename "${img%.*}")" \
    --wandb --wandb-group flow_study --quiet
done
cat "$out/rd/rd.md" "$out/flow_nl/eval_results.md" "$out/ms_nl/eval_results.md"
