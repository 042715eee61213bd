#!/usr/bin/env bash
# Fourteenth session, call 4: the router weight after the down projection, now in
# models/backends/native.py. First its GPU tests (the native experts in bf16 against the float64
# reference, compiled gradients against eager at top-1 and top-2),
# then the study slice's sweep benchmark (its compile cache lives in the sweep folder: cold).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_GPU_DATA=$PWD/.bench-data
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
timeout 120 python3 -m pytest -q -n 0 -m gpu tests/models/test_gpu_backends.py \
  -k "(float64_reference and native) or (eager_gradients and default and not chunked)" \
  -p no:cacheprovider --durations=5 > "$OUT/gpu_tests.log" 2>&1
tail -12 "$OUT/gpu_tests.log"
timeout 330 bash experiments/benchmarks/device_run.sh bench:default
echo "=== done ($(date +%T))"
