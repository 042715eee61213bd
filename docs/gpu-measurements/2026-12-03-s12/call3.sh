#!/usr/bin/env bash
# Twelfth session, call 3: the written-out backwards (SwiGLU of the experts and the dense layer,
# the head's cross-entropy) against autograd's (fusion_ab.py): GPU kernel time of the layers at
# the study's width and of the d 192, 6-layer, E16 study step, each under compile_mode=default
# (every kernel seen); then the GPU tests of the
# native experts against float64 and of compiled gradients against eager.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_GPU_DATA=$PWD/.bench-data
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
AB=docs/gpu-measurements/2026-12-03-s12/fusion_ab.py
mkdir -p /tmp/p
LAYER="--tokens 32768 --d-model 192 --ffn 768 --top-k 1 --rows 25 --compile"
for ev in 16:new 16:old 1:new 1:old; do
  e=${ev%:*} v=${ev#*:}
  timeout 90 python3 $AB $v profile_layer $LAYER --experts $e > /tmp/p/layer-e$e-$v.log 2>&1
  echo "layer E$e $v: $(grep -E '^GPU kernel time' /tmp/p/layer-e$e-$v.log)"
done | tee "$OUT/summary.txt"
STEP="data.vocab_size=8192 model.d_model=192 model.n_layers=6 model.n_heads=6 model.d_ff=768
  model.seq_len=512 moe.num_experts=16 moe.top_k=1 train.batch_size=64 train.compile=true
  train.compile_mode=default"
i=0
for v in old new; do
  i=$((i + 1))
  timeout 120 python3 $AB $v run_profile --rows 40 --json /tmp/p/step-$i-$v.json $STEP \
    > /tmp/p/step-$i-$v.log 2>&1
  echo "step $v: $(grep -E '^GPU kernel time' /tmp/p/step-$i-$v.log)"
done | tee -a "$OUT/summary.txt"
tar czf "$OUT/profiles.tgz" -C /tmp/p .
echo "=== GPU tests ($(date +%T))"
timeout 200 python3 -m pytest -q -n 0 -m gpu tests/models/test_gpu_backends.py \
  -k "(float64_reference and native) or (eager_gradients and default and not chunked)" \
  -p no:cacheprovider --durations=5 > "$OUT/gpu_tests.log" 2>&1
tail -12 "$OUT/gpu_tests.log"
echo "=== done ($(date +%T))"
