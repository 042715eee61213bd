#!/usr/bin/env bash
# Seventh session, call 1: the first corpus part, then the GPU training tests (issue 19's
# "the GPU tests pass on the H200", among them test_torchrun_one_rank_matches_the_plain_run),
# first run since the head stopped returning logits beside the loss.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
bash experiments/benchmarks/device_run.sh pieces:.study2-data1:study2
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_SCALING_CACHE=/tmp/moe-cache
timeout 250 python3 -m pytest -q -m gpu -p no:cacheprovider tests/experiments/test_gpu_training.py \
  2>&1 | grep -v "DEBUG torch" | tee "$OUT/gpu_tests.log" | tail -8
