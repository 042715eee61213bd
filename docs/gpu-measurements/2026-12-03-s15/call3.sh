#!/usr/bin/env bash
# Fifteenth session, call 3: with the compile workers started before the model is built
# (0ef87e6, experiments/trainer/compile.start_compile_workers), the paths users run, cold:
# the study slice's sweep benchmark (its compile cache lives in the sweep folder) and the d256
# single run.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export MOE_GPU_DATA=$PWD/.bench-data
timeout 480 bash experiments/benchmarks/device_run.sh bench:default,d256
echo "=== done ($(date +%T))"
