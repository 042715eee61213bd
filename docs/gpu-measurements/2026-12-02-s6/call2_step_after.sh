#!/usr/bin/env bash
# Sixth session, call 2: the first corpus part, then the d 192 E16 training step again after
# the head stopped returning logits beside the loss (compare call 1's profile: 105.97 ms of GPU
# time over 10 steps), in compile_mode=default (every kernel seen) and as a study run takes it
# (compile auto: CUDA graphs), steady step time only.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
bash experiments/benchmarks/device_run.sh pieces:.study2-data1:study2
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_SCALING_CACHE=/tmp/moe-cache
STEP="data.vocab_size=8192 model.d_model=192 model.n_layers=6 model.n_heads=6 model.d_ff=768
  model.seq_len=512 moe.num_experts=16 moe.top_k=1 train.batch_size=64 train.compile=true"
echo "=== profile, compile_mode=default ($(date +%T))"
python3 -m experiments.benchmarks.run_profile --rows 45 --json "$OUT/run_profile_d192_e16.json" \
  $STEP train.compile_mode=default > "$OUT/run_profile_d192_e16.log" 2>&1
grep -A1 "^steady\|Self CUDA time total" "$OUT/run_profile_d192_e16.log" | head -4
echo "=== steady step, compile_mode=auto (CUDA graphs) ($(date +%T))"
python3 -m experiments.benchmarks.run_profile --no-profile --json "$OUT/run_graphs_d192_e16.json" \
  $STEP > "$OUT/run_graphs_d192_e16.log" 2>&1
grep "^data\|^steady" "$OUT/run_graphs_d192_e16.log"
echo "=== done ($(date +%T))"
