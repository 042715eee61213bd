#!/usr/bin/env bash
# Thirteenth session, calls 2-4 (each its own call; the machine warm from call 1 for calls 2-3):
#   bash call2_4.sh 2   the GPU tests of test_gpu_backends.py that call 1 of the twelfth session
#                       did not reach, max-autotune aside
#   bash call2_4.sh 3   the two max-autotune cases of the compiled-gradient test
#   bash call2_4.sh 4   its top-1 case again without inductor's prologue fusion (a cold machine)
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -1
T=tests/models/test_gpu_backends.py
case $1 in
  2) K="not max-autotune and not float64_reference and not (eager_gradients and default)"
     timeout 470 python3 -m pytest -q -n 0 -m gpu $T -k "$K" -p no:cacheprovider --durations=12 -rA \
       > "$OUT/gpu_tests.log" 2>&1 ;;
  3) timeout 530 python3 -m pytest -q -n 0 -m gpu $T -k "max-autotune" -p no:cacheprovider \
       --durations=12 -rA > "$OUT/gpu_tests_max_autotune.log" 2>&1 ;;
  4) TORCHINDUCTOR_PROLOGUE_FUSION=0 timeout 420 python3 -m pytest -q -n 0 -m gpu $T \
       -k "eager_gradients and 1-max-autotune" -p no:cacheprovider --durations=3 -rA \
       > "$OUT/gpu_tests_max_autotune_noprologue.log" 2>&1 ;;
esac
