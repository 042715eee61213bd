#!/usr/bin/env bash
# One device call: install the carried wheels, run the GPU tests, run both benchmarks.
# Usage on the device: bash experiments/benchmarks/device_run.sh [tests|layer|train|all]
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_SCALING_CACHE=/tmp/moe-cache
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
python3 -c "import torch, megablocks; print('torch', torch.__version__, torch.cuda.get_device_name())"
what=${1:-all}
if [[ $what == tests || $what == all ]]; then
  python3 -m pytest -q -m gpu tests/models/test_gpu_backends.py -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
fi
if [[ $what == layer || $what == all ]]; then
  python3 -m experiments.benchmarks.moe_layer --json "$OUT/moe_layer.json" 2>&1 | tee "$OUT/moe_layer.log"
fi
if [[ $what == train || $what == all ]]; then
  python3 -m experiments.benchmarks.train_step --json "$OUT/train_step.json" 2>&1 | tee "$OUT/train_step.log"
fi
