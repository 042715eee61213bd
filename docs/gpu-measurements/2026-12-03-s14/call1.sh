#!/usr/bin/env bash
# Fourteenth session, call 1 (a cold machine): what bounds each of issue 19's single-run targets
# with today's code. First, while every cache is cold, the d 192 E16 study step's warm-up with
# the compiler's phases (run_profile's compile_phases_s) and its kernel table; then the single
# runs as users launch them (sweep_bench base, base-dense, d256: each run's own summary.json);
# then the base e8k1 step's kernel table on the H200 (its compile cache now warm). The study
# step is the twelfth and thirteenth sessions' (their data, the default), to compare.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_GPU_DATA=$PWD/.bench-data
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
mkdir -p /tmp/p
STEP="data.vocab_size=8192 model.d_model=192 model.n_layers=6 model.n_heads=6 model.d_ff=768
  model.seq_len=512 moe.num_experts=16 moe.top_k=1 train.batch_size=64"
timeout 150 python3 -m experiments.benchmarks.run_profile --rows 45 --json /tmp/p/study-default.json \
  $STEP train.compile=true train.compile_mode=default > /tmp/p/study-default.log 2>&1
timeout 120 python3 -m experiments.benchmarks.run_profile --no-profile --json /tmp/p/study-graphs.json \
  $STEP train.compile=true > /tmp/p/study-graphs.log 2>&1
grep -hE "^(data |compiler phases|steady step|GPU kernel time)" /tmp/p/study-*.log | tee "$OUT/summary.txt"
timeout 330 bash experiments/benchmarks/device_run.sh bench:base,base-dense,d256
timeout 120 python3 -m experiments.benchmarks.run_profile --rows 45 --json /tmp/p/base.json \
  model=base moe=e8k1 budget.flops=2e16 data=bin data.path=$MOE_GPU_DATA > /tmp/p/base.log 2>&1
grep -hE "^(data |compiler phases|steady step|GPU kernel time)" /tmp/p/base.log | tee -a "$OUT/summary.txt"
tar czf "$OUT/profiles.tgz" -C /tmp/p .
echo "=== done ($(date +%T))"
