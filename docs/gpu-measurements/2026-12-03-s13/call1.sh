#!/usr/bin/env bash
# Thirteenth session, call 1 (a cold machine): the study slice's sweep benchmark with the twelfth
# session's written-out backwards, first, while the compile cache is cold; then the interleaved
# gate/up A/B (../2026-12-03-s12/interleave_ab.py): the E16 layer and the d 192 E16 study step,
# GPU kernel time, one process per variant, each variant twice in alternation.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_GPU_DATA=$PWD/.bench-data
timeout 330 bash experiments/benchmarks/device_run.sh bench:default
AB=docs/gpu-measurements/2026-12-03-s12/interleave_ab.py
mkdir -p /tmp/p
LAYER="--tokens 32768 --d-model 192 --ffn 768 --top-k 1 --experts 16 --rows 25 --compile"
for v in committed interleaved committed interleaved; do
  timeout 60 python3 $AB $v profile_layer $LAYER > /tmp/p/layer-$v.log 2>&1
  echo "layer E16 $v: $(grep -E '^GPU kernel time' /tmp/p/layer-$v.log || tail -2 /tmp/p/layer-$v.log)"
done | tee "$OUT/ab_summary.txt"
STEP="data.vocab_size=8192 model.d_model=192 model.n_layers=6 model.n_heads=6 model.d_ff=768
  model.seq_len=512 moe.num_experts=16 moe.top_k=1 train.batch_size=64 train.compile=true
  train.compile_mode=default"
i=0
for v in committed interleaved committed interleaved; do
  i=$((i + 1))
  timeout 75 python3 $AB $v run_profile --rows 40 --json /tmp/p/step-$i-$v.json $STEP \
    > /tmp/p/step-$i-$v.log 2>&1
  echo "step $v: $(grep -E '^GPU kernel time' /tmp/p/step-$i-$v.log || tail -2 /tmp/p/step-$i-$v.log)"
done | tee -a "$OUT/ab_summary.txt"
tar czf "$OUT/ab_profiles.tgz" -C /tmp/p .
echo "=== done ($(date +%T))"
