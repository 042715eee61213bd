#!/usr/bin/env bash
# Issue 19, third H200 call: every GPU test, then the d256 target run from its own summary.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_SCALING_CACHE=/tmp/moe-cache MOE_GPU_DATA=$PWD/.study-data
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -1
t0=$(date +%s)
timeout 330 python3 -m pytest -q -m gpu tests -p no:cacheprovider -x 2>&1 | tee "$OUT/gpu_tests.log" | tail -15
echo "=== d256 ($(( $(date +%s) - t0 ))s)"
timeout 110 python3 -m experiments.benchmarks.sweep_bench --configs d256 --json "$OUT/d256.json" --keep /tmp/bench 2>&1
cp /tmp/bench/d256_summary.json "$OUT/" 2>/dev/null
echo "=== done ($(( $(date +%s) - t0 ))s)"
