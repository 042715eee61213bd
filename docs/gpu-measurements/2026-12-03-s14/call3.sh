#!/usr/bin/env bash
# Fourteenth session, call 3: the router weight after the down projection (weight_after_ab.py)
# against the committed native experts, one process per variant, alternated twice: the MoE layer
# alone compiled (the study's d 192 E16, and the base model's d 768 E8, top-1), then the d 192
# E16 study step (run_profile, compile_mode=default so the profiler sees every kernel).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
AB=docs/gpu-measurements/2026-12-03-s14/weight_after_ab.py
python3 $AB check | tee "$OUT/summary.txt"
mkdir -p /tmp/p
for shape in "d192:--tokens 32768 --d-model 192 --ffn 768 --experts 16" \
             "d768:--tokens 65536 --d-model 768 --ffn 3072 --experts 8"; do
  name=${shape%%:*}
  for v in committed after committed after; do
    timeout 90 python3 $AB $v profile_layer ${shape#*:} --top-k 1 --rows 25 --compile \
      > /tmp/p/layer-$name-$v.log 2>&1
    echo "layer $name $v: $(grep -E '^GPU kernel time' /tmp/p/layer-$name-$v.log || tail -2 /tmp/p/layer-$name-$v.log)"
  done
done | tee -a "$OUT/summary.txt"
STEP="data.vocab_size=8192 model.d_model=192 model.n_layers=6 model.n_heads=6 model.d_ff=768
  model.seq_len=512 moe.num_experts=16 moe.top_k=1 train.batch_size=64 train.compile=true
  train.compile_mode=default"
i=0
for v in committed after committed after; do
  i=$((i + 1))
  timeout 90 python3 $AB $v run_profile --rows 45 --json /tmp/p/step-$i-$v.json $STEP \
    > /tmp/p/step-$i-$v.log 2>&1
  echo "step $v: $(grep -E '^GPU kernel time' /tmp/p/step-$i-$v.log || tail -2 /tmp/p/step-$i-$v.log)"
done | tee -a "$OUT/summary.txt"
tar czf "$OUT/profiles.tgz" -C /tmp/p .
echo "=== done ($(date +%T))"
