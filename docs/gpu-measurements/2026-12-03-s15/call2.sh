#!/usr/bin/env bash
# Fifteenth session, call 2 (the machine warm from call 1): the concat A/B again, now that ab.py
# sets only the inductor options torch 2.11 has (call 1's concat runs failed on the missing
# max_complex_pointwise_cat_inputs); then the base e8k1 run as users launch it, cold compile
# cache, with the router weight after the down projection (f553ed7).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_GPU_DATA=$PWD/.bench-data
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
AB=docs/gpu-measurements/2026-12-03-s15/ab.py
rm -rf /tmp/p; mkdir -p /tmp/p
LAYER="--tokens 32768 --d-model 192 --ffn 768 --top-k 1 --experts 16 --rows 25 --compile"
STEP="data.vocab_size=8192 model.d_model=192 model.n_layers=6 model.n_heads=6 model.d_ff=768
  model.seq_len=512 moe.num_experts=16 moe.top_k=1 train.batch_size=64 train.compile=true"
i=0
for v in concat committed concat committed; do
  i=$((i + 1))
  timeout 90 python3 $AB $v profile_layer $LAYER > /tmp/p/layer-$i-$v.log 2>&1
  echo "layer $v: $(grep -E '^GPU kernel time' /tmp/p/layer-$i-$v.log || tail -2 /tmp/p/layer-$i-$v.log)"
  timeout 90 python3 $AB $v run_profile --rows 45 --json /tmp/p/step-$i-$v.json $STEP \
    train.compile_mode=default > /tmp/p/step-$i-$v.log 2>&1
  echo "step $v: $(grep -E '^GPU kernel time' /tmp/p/step-$i-$v.log || tail -2 /tmp/p/step-$i-$v.log)"
done | tee "$OUT/summary.txt"
tar czf "$OUT/profiles.tgz" -C /tmp/p .
timeout 240 bash experiments/benchmarks/device_run.sh bench:base
echo "=== done ($(date +%T))"
