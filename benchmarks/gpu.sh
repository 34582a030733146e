#!/usr/bin/env bash
# The GPU kit: the tests marked `cuda` (tests/unit/engine/test_cuda.py) and the GPU benchmarks, in one go on
# one CUDA GPU (under 8 minutes), writing JSON that benchmarks/README.md quotes.
#   bash benchmarks/gpu.sh                      # results in benchmarks/results/gpu/
#   bash benchmarks/gpu.sh --out /tmp/gpu       # elsewhere
#   bash benchmarks/gpu.sh --dry                # CPU-only dry mode: every step at tiny sizes on
#                                               # the CPU (the test suite runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DRY=0
OUT=benchmarks/results/gpu
while [ $# -gt 0 ]; do
  case "$1" in
    --dry) DRY=1 ;;
    --out) OUT=${2:?--out needs a folder}; shift ;;
    *) echo "gpu.sh: unknown argument $1: use --dry and/or --out DIR" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
if [ "$DRY" = 1 ]; then
  export TRAINKIT_DRY=1 CUDA_VISIBLE_DEVICES=""
  DEVICE=cpu
  SELECT=(-k "not compile")  # torch.compile on the CPU is tested by tests/unit/engine/test_fast_path.py
  THROUGHPUT=(--models mlp --batches 32 --images 300 --epochs 1 --rounds 2 --compile default)
  COMPRESSION=(--models mlp --batch 16 --samples 256 --epochs 2 --packing-elements 65536 --rounds 2)
  EVALUATION=(--model mlp --images 64 --batch 32 --pairs 2)  # 12 states
  PRUNING=(--models bn_cnn --keep 0.5 --pairs 2 --batch 8)
  STACKED=(--setups resnet20 perceptron --runs 3 --steps 50 --ptr 256 --images 256 --epochs 1
           --rounds 1)
else
  if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu.sh: no CUDA GPU is visible: on a CPU-only machine run bash benchmarks/gpu.sh --dry" >&2
    exit 2
  fi
  DEVICE=cuda
  SELECT=()
  THROUGHPUT=(--models resnet20 resnet56 --batches 128 512 --images 25000 --epochs 2 --rounds 3
              --compile reduce-overhead --compile-models resnet20)
  COMPRESSION=(--models mnist_cnn resnet20 --batch 64 --samples 8192 --epochs 3 --rounds 3)
  EVALUATION=(--model resnet20 --images 10000 --batch 1000 --pairs 5)
  PRUNING=(--models resnet20 vgg16_bn --keep 0.5 0.2 --pairs 9 --batch 256)
  STACKED=(--setups resnet20 --runs 8 --images 8192 --epochs 2 --rounds 2)
  STACKED_WIDE=(--setups perceptron --runs 256 --steps 300 --rounds 1)
fi
step() { echo "== gpu.sh: $*" >&2; }
step "tests marked cuda on $DEVICE"
"$PY" -m pytest -q -p no:cacheprovider -m cuda tests/unit/engine/test_cuda.py "${SELECT[@]}" \
  --junitxml "$OUT/cuda_tests.xml"
step "throughput: ours vs the standard pipeline vs a bare loop, EMA x5, compiled"
"$PY" benchmarks/throughput.py "${THROUGHPUT[@]}" --device "$DEVICE" --out "$OUT/throughput.json"
step "compression cost"
"$PY" benchmarks/compression.py "${COMPRESSION[@]}" --device "$DEVICE" --out "$OUT/compression.json"
step "final evaluation: one state at a time vs all together"
"$PY" benchmarks/evaluation.py "${EVALUATION[@]}" --device "$DEVICE" --out "$OUT/evaluation.json"
step "exported pruned networks: measured speed-ups"
"$PY" benchmarks/pruning.py "${PRUNING[@]}" --device "$DEVICE" --out "$OUT/pruning.json"
step "stacked runs against one process per run: ResNet-20 x 8, perceptron x 256"
"$PY" benchmarks/stacked.py "${STACKED[@]}" --device "$DEVICE" --out "$OUT/stacked.json"
if [ "$DRY" = 0 ]; then
  "$PY" benchmarks/stacked.py "${STACKED_WIDE[@]}" --device "$DEVICE" \
    --out "$OUT/stacked_wide.json"
fi
step "done: $OUT/{cuda_tests.xml,throughput,compression,evaluation,pruning,stacked}.json"
