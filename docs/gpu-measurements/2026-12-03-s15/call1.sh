#!/usr/bin/env bash
# Fifteenth session, call 1 (prepared in the fourteenth as next_call.sh): ab.py's two A/Bs, one process per variant,
# alternated twice. The SwiGLU backward as a ConcatKernel: the d 192 E16 layer alone and the
# study step (GPU kernel time). The compile pool started first: the study run's first 3 steps
# and setup, each process with a compile cache of its own (cold).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
AB=docs/gpu-measurements/2026-12-03-s15/ab.py
mkdir -p /tmp/p
LAYER="--tokens 32768 --d-model 192 --ffn 768 --top-k 1 --experts 16 --rows 25 --compile"
STEP="data.vocab_size=8192 model.d_model=192 model.n_layers=6 model.n_heads=6 model.d_ff=768
  model.seq_len=512 moe.num_experts=16 moe.top_k=1 train.batch_size=64 train.compile=true"
i=0
for v in committed concat committed concat; do
  i=$((i + 1))
  timeout 90 python3 $AB $v profile_layer $LAYER > /tmp/p/layer-$i-$v.log 2>&1
  echo "layer $v: $(grep -E '^GPU kernel time' /tmp/p/layer-$i-$v.log || tail -2 /tmp/p/layer-$i-$v.log)"
  timeout 90 python3 $AB $v run_profile --rows 45 --json /tmp/p/step-$i-$v.json $STEP \
    train.compile_mode=default > /tmp/p/step-$i-$v.log 2>&1
  echo "step $v: $(grep -E '^GPU kernel time' /tmp/p/step-$i-$v.log || tail -2 /tmp/p/step-$i-$v.log)"
done | tee "$OUT/summary.txt"
for v in committed warm committed warm; do
  i=$((i + 1))
  TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) timeout 90 python3 $AB $v run_profile --no-profile \
    --json /tmp/p/warm-$i-$v.json $STEP > /tmp/p/warm-$i-$v.log 2>&1
  echo "warm-up $v: $(grep -E '^data ' /tmp/p/warm-$i-$v.log || tail -2 /tmp/p/warm-$i-$v.log)"
done | tee -a "$OUT/summary.txt"
tar czf "$OUT/profiles.tgz" -C /tmp/p .
echo "=== done ($(date +%T))"
