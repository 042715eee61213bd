#!/usr/bin/env bash
# Prepared for the next session (not run yet): next_ab.py's one_config against the committed
# code, one process per variant, alternated twice. The d 192 E16 study run cold (a compile
# cache of its own per process): its setup and first 3 steps, and the compiler's phases; then
# the same step's GPU kernel time (what one configuration per pointwise kernel costs, and
# clipping folded into fused AdamW); then the base e8k1 run's first 3 steps cold. Carry .gpu-wheels and .bench-data; ~6 min.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
AB=docs/gpu-measurements/2026-12-03-s15/next_ab.py
rm -rf /tmp/p; mkdir -p /tmp/p
STEP="data.vocab_size=8192 model.d_model=192 model.n_layers=6 model.n_heads=6 model.d_ff=768
  model.seq_len=512 moe.num_experts=16 moe.top_k=1 train.batch_size=64 train.compile=true"
BASE="model=base moe=e8k1 budget.flops=2e16 data=bin data.path=$PWD/.bench-data"
i=0
for v in committed one_config committed one_config; do
  i=$((i + 1))
  TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) timeout 90 python3 $AB $v run_profile --no-profile \
    --json /tmp/p/cold-$i-$v.json $STEP > /tmp/p/cold-$i-$v.log 2>&1
  echo "d192 cold $v: $(grep -E '^data ' /tmp/p/cold-$i-$v.log || tail -2 /tmp/p/cold-$i-$v.log)"
done | tee "$OUT/summary.txt"
for v in committed one_config clip_in_adam committed one_config clip_in_adam; do
  i=$((i + 1))
  timeout 90 python3 $AB $v run_profile --rows 45 --json /tmp/p/step-$i-$v.json $STEP \
    train.compile_mode=default > /tmp/p/step-$i-$v.log 2>&1
  echo "d192 step $v: $(grep -E '^GPU kernel time' /tmp/p/step-$i-$v.log || tail -2 /tmp/p/step-$i-$v.log)"
done | tee -a "$OUT/summary.txt"
for v in committed one_config committed one_config; do
  (( SECONDS > 400 )) && break  # another run would not fit the call
  i=$((i + 1))
  TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) timeout 100 python3 $AB $v run_profile --no-profile \
    --json /tmp/p/base-$i-$v.json $BASE > /tmp/p/base-$i-$v.log 2>&1
  echo "base cold $v: $(grep -E '^(data |steady)' /tmp/p/base-$i-$v.log | tr '\n' ' ' || tail -2 /tmp/p/base-$i-$v.log)"
done | tee -a "$OUT/summary.txt"
tar czf "$OUT/profiles.tgz" -C /tmp/p .
echo "=== done ($(date +%T))"
