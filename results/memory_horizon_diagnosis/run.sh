#!/usr/bin/env bash
# The Memory Horizon span diagnosis (issue 23): every run is one `gateloop train memory-horizon`
# from the `diagnosis` preset (L 256, one reset, 5 000 steps, warm-up 5 %, the paper's optimiser
# otherwise) with the flags that make its change; `transformer` is the parameter-matched
# Transformer of the ablation grid at the same preset. Runs go to $OUT/NAME, continue with --resume.
#
#   results/memory_horizon_diagnosis/run.sh                 # every run, in this order
#   results/memory_horizon_diagnosis/run.sh steps-5k opt-d-paper-shape-no-clip   # some of them
#   OUT=~/elsewhere THREADS=1 CORE=1 results/memory_horizon_diagnosis/run.sh
#
# then the report (report.md says which runs it compares):
#   gateloop eval memory-horizon --compare results/memory_horizon_diagnosis --run $OUT/steps-5k --run ...
set -euo pipefail
OUT=${OUT:-$HOME/gateloop-runs/mh-diagnosis}
THREADS=${THREADS:-1}
CORE=${CORE:-1}
PAPER_SHAPE=(--train.warmup-fraction 0.53)  # the paper's 10 000 of 18 900 steps of warm-up
WIDE=(--model.d-model 128 --model.d-qk 128 --model.d-v 128 --model.n-head 128 --model.d-channel-mixing 256)

declare -A RUNS=(
  [steps-5k]=""
  [steps-2.5k]="--train.max-steps 2500"
  [steps-10k]="--train.max-steps 10000"
  [steps-10k-seed1]="--train.max-steps 10000 --train.seed 1"
  [steps-5k-seed1]="--train.seed 1"
  [opt-a-paper-shape]="${PAPER_SHAPE[*]}"
  [opt-c-lr1e-3]="--train.lr 1e-3"
  [opt-d-paper-shape-no-clip]="${PAPER_SHAPE[*]} --train.grad-clip none"
  [opt-e-paper-shape-clip10]="${PAPER_SHAPE[*]} --train.grad-clip 10"
  [cap-width-128]="${WIDE[*]}"
  [cap-layers-8]="--model.n-layer 8"
  [opt-f-lr5e-3]="--train.lr 5e-3"
  [init-short-memory]="--model.magnitude-init 0.3,0.7"
  [init-long-memory]="--model.magnitude-init 0.99,0.9999"
  [transformer]="(the ablation grid's transformer variant)"
)
ORDER=(opt-a-paper-shape steps-5k opt-d-paper-shape-no-clip opt-e-paper-shape-clip10 steps-2.5k opt-c-lr1e-3
  steps-10k cap-width-128 cap-layers-8 transformer opt-f-lr5e-3 init-short-memory
  init-long-memory steps-10k-seed1 steps-5k-seed1)

run() {
  local name=$1
  [[ -v RUNS[$name] ]] || { echo "run.sh: unknown run $name; runs: ${ORDER[*]}" >&2; exit 2; }
  echo "== $name: ${RUNS[$name]:-(the preset)}"
  if [[ $name == transformer ]]; then  # OUT/transformer/transformer/seed0 is the run directory
    OMP_NUM_THREADS=$THREADS taskset -c "$CORE" gateloop experiment ablations --task memory-horizon \
      --preset diagnosis --variants transformer --seeds 0 --threads "$THREADS" --out "$OUT/transformer" \
      --resume --no-progress
    return
  fi
  # shellcheck disable=SC2086  # the flags are words
  OMP_NUM_THREADS=$THREADS taskset -c "$CORE" gateloop train memory-horizon --preset diagnosis \
    --variant data-controlled ${RUNS[$name]} --threads "$THREADS" --out "$OUT/$name" --resume --no-progress
}

for name in "${@:-${ORDER[@]}}"; do run "$name"; done
