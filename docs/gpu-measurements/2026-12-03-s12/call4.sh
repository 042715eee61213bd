#!/usr/bin/env bash
# Twelfth session, call 4 (the last ~390 s of device time): the GPU training tests with the
# written-out backwards (whole runs, resumption, torchrun's one rank against the plain run), then
# the GPU tests of the models that call 3 did not run, until the call's time is up.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
K="not max-autotune and not float64_reference and not (eager_gradients and default)"
timeout 270 python3 -m pytest -q -n 0 -m gpu tests/experiments/test_gpu_training.py \
  tests/models/test_gpu_backends.py -k "$K" -p no:cacheprovider --durations=8 \
  > "$OUT/gpu_tests.log" 2>&1
tail -16 "$OUT/gpu_tests.log"
