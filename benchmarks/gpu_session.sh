#!/usr/bin/env bash
# Everything a session with a lent GPU runs, as one command that fits the device's short lease:
# tier C tests (`pytest -m gpu`), the Triton-backend test files on CUDA (they pick the GPU when
# there is one), then the GPU benchmarks. Each step has its own time limit and a failing step
# does not stop the next; logs and results go to $OUT (default /tmp/gateloop-gpu).
#
# The device image has torch and triton but not fla-core or the peer: download their wheels here
# first (`pip download --no-deps -d .devwheels fla-core==0.6.0 gateloop-transformer==0.2.5
# rotary-embedding-torch`) and carry `.devwheels`. Then, from the repository root:
#
#   OUT=... bash benchmarks/gpu_session.sh
set -uo pipefail
OUT=${OUT:-/tmp/gateloop-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
LOG=$OUT/gpu_session.log

step() {  # step SECONDS NAME CMD...: run one step under its own limit, log its status
  local limit=$1 name=$2
  shift 2
  echo "== $name ($(date +%T), limit ${limit}s): $*" | tee -a "$LOG"
  local start=$SECONDS
  timeout "$limit" "$@" >>"$LOG" 2>&1
  echo "== $name: rc=$? in $((SECONDS - start))s" | tee -a "$LOG"
}

if compgen -G ".devwheels/*.whl" >/dev/null; then
  step 60 wheels "$PY" -m pip install -q --no-deps --no-index .devwheels/*.whl
fi
step 30 environment bash -c "nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv;
  $PY -c 'import torch, triton; print(\"torch\", torch.__version__, \"triton\", triton.__version__);
import importlib.util as u; print(\"fla\", u.find_spec(\"fla\") is not None)'"
step "${TIER_C_LIMIT:-120}" tier-c "$PY" -m pytest -q -p no:cacheprovider \
  tests/test_triton_gpu.py tests/test_cuda.py --junitxml="$OUT/tier_c.xml"
step "${SISO_LIMIT:-100}" siso-on-cuda "$PY" -m pytest -q -p no:cacheprovider -x \
  tests/test_triton_siso_scan.py
# our SISO kernels first, then the wide cases (fla's autotuning takes a while): two result files
step "${OP_SPEED_LIMIT:-120}" gpu-op-speed-siso "$PY" benchmarks/gpu_op_speed.py --cases S2,S-FEW \
  --name gpu_op_speed_siso
step "${OP_SPEED_LIMIT:-120}" gpu-op-speed-wide "$PY" benchmarks/gpu_op_speed.py --cases M1,LONG \
  --name gpu_op_speed_wide
cp benchmarks/results/gpu_op_speed_siso.json benchmarks/results/gpu_op_speed_wide.json "$OUT/" 2>/dev/null
if [[ -n ${WITH_TRAINING_STEP:-} ]]; then
  step "${TRAINING_LIMIT:-100}" gpu-training-step "$PY" benchmarks/gpu_training_step.py --timeout 90
  cp benchmarks/results/gpu_training_step.json "$OUT/" 2>/dev/null
fi
if [[ -n ${WITH_TRITON_TESTS:-} ]]; then
  step "${TRITON_LIMIT:-150}" triton-on-cuda "$PY" -m pytest -q -p no:cacheprovider tests/test_triton.py
fi
echo "done $(date +%T)" | tee -a "$LOG"
