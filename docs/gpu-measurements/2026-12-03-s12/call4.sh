#!/usr/bin/env bash
# Twelfth session, call 4 (a cold machine): the study slice's sweep benchmark with the written-out
# backwards (SwiGLU, cross-entropy), on the first 50M tokens of study 2's corpus (.bench-data,
# carried), as the eleventh session's call 1 measured it (11.5%).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export MOE_GPU_DATA=$PWD/.bench-data
timeout 540 bash experiments/benchmarks/device_run.sh bench:default
