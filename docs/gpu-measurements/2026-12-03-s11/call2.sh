#!/usr/bin/env bash
# Eleventh session, call 2: the MPS daemon's quitting (mps_probe.sh), the attention block's
# kernel choices at the study's shapes, and the GPU tests but the max-autotune cases.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
timeout 90 bash docs/gpu-measurements/2026-12-03-s11/mps_probe.sh > "$OUT/mps_probe.log" 2>&1
tail -8 "$OUT/mps_probe.log"
timeout 150 python3 -m experiments.benchmarks.attention_kernels --json "$OUT/attention_kernels.json" \
  2>&1 | tee "$OUT/attention_kernels.log"
timeout 330 python3 -m pytest -q -n 0 -m gpu tests/models/test_gpu_backends.py \
  tests/experiments/test_gpu_training.py -k "not max-autotune" -p no:cacheprovider --durations=10 \
  > "$OUT/gpu_tests.log" 2>&1
tail -16 "$OUT/gpu_tests.log"
