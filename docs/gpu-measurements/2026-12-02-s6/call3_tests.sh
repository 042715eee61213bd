#!/usr/bin/env bash
# Sixth session, call 3: the second corpus part, then the GPU tests of this session's changes:
# compiled top-1/top-2 gradients against eager (top-2 now compiles its router as its own graph)
# and the regional-compile graph count.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
MOE_GPU_DATA=/tmp/pieces/study2 bash experiments/benchmarks/device_run.sh pieces:.study2-data2:study2
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_SCALING_CACHE=/tmp/moe-cache
python3 -m pytest -q -m gpu -p no:cacheprovider tests/models/test_gpu_backends.py \
  -k "eager_gradients or regional_compile" 2>&1 | grep -v "DEBUG torch" | tee "$OUT/gpu_tests.log" | tail -8
