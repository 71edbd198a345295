#!/usr/bin/env bash
# The GPU check, in one go and under 6 minutes on an H100/H200-class card: the tests marked
# `cuda` (and the compile tests), then the CUDA benchmarks. Run it from the project root:
#
#   bash benchmarks/gpu_check.sh
#
# It writes benchmarks/results/{optimizer_step,train_overhead,train_overhead-reduce-overhead}-cuda.json
# and gpu_check-cuda.log, each naming the card, and copies them to $OUT when that is set. On a
# machine whose image has torch with CUDA but not our web stack, carry the missing wheels and the
# data sets in .gpu-carry/ with an on-device.sh that installs them: this script sources it.
# Every step has its own time limit, so a slow compile costs that step, not the whole check.
set -uo pipefail
cd "$(dirname "$0")/.."
results=benchmarks/results
mkdir -p "$results"
log="$results/gpu_check-cuda.log"
exec > >(tee "$log") 2>&1
if [ -f .gpu-carry/on-device.sh ]; then
  # shellcheck disable=SC1091
  source .gpu-carry/on-device.sh || exit 1
fi
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
$py -c "import torch, sys; print('torch', torch.__version__); sys.exit(not torch.cuda.is_available())" \
  || { echo "gpu_check: no CUDA device here"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
start=$SECONDS
step() {  # step LIMIT_SECONDS NAME COMMAND...
  local limit=$1 name=$2; shift 2
  echo; echo "== $name (limit ${limit}s, at $((SECONDS - start))s)"
  timeout --kill-after=10 "$limit" "$@"; local rc=$?
  echo "== $name: exit $rc after $((SECONDS - start))s"
}
step 90 "tests marked cuda, and the compiled-step tests" \
  $py -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_optim_compile.py
step 110 "optimizer step, ResNet-18 shapes" \
  $py benchmarks/optimizer_step.py --device cuda --sets resnet18 --steps 50 --warmup 5 \
  --json "$results/optimizer_step-cuda.json"
step 120 "trainer epoch, BAMSProd vs Adam, and runs per GPU" \
  $py benchmarks/train_overhead.py --device cuda --models mlp,binarynet,resnet18 --repeats 1 \
  --pack 1,2,4 --skip-overhead --json "$results/train_overhead-cuda.json"
step 40 "trainer epoch with the compiled train step (CUDA graphs)" \
  $py benchmarks/train_overhead.py --device cuda --models mlp --repeats 1 \
  --compile reduce-overhead --skip-overhead --json "$results/train_overhead-reduce-overhead-cuda.json"
echo; echo "gpu_check: done in $((SECONDS - start))s"
if [ -n "${OUT:-}" ]; then
  cp "$results"/*-cuda.json "$log" "$OUT"/ 2>/dev/null || true
fi
