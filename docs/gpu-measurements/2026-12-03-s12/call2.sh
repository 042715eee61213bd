#!/usr/bin/env bash
# Twelfth session, call 2: is the compiled study step slower on the GPU than the eager one?
# (call 1's moe_layer: at d 192 the compiled dense MLP took 1.20 ms, graphed 0.91, eager 0.60.)
# GPU kernel time a step of the d 192, 6-layer, E16 study step eager (train.compile=false) and
# compiled (compile_mode=default, every kernel seen), with the kernel tables; then the dense and
# the E16 layer alone at the study's width, eager and compiled, under autocast as training runs.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_GPU_DATA=$PWD/.bench-data
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
STEP="data.vocab_size=8192 model.d_model=192 model.n_layers=6 model.n_heads=6 model.d_ff=768
  model.seq_len=512 moe.num_experts=16 moe.top_k=1 train.batch_size=64"
mkdir -p /tmp/p
for v in eager compiled; do
  if [ $v = eager ]; then extra="train.compile=false"; else extra="train.compile=true train.compile_mode=default"; fi
  timeout 120 python3 -m experiments.benchmarks.run_profile --rows 45 --json /tmp/p/step-$v.json \
    $STEP $extra > /tmp/p/step-$v.log 2>&1
  echo "step $v: $(grep -E '^GPU kernel time' /tmp/p/step-$v.log)"
done | tee "$OUT/summary.txt"
LAYER="--tokens 32768 --d-model 192 --ffn 768 --top-k 1 --rows 25"
for e in 1 16; do
  for c in "" "--compile"; do
    name=layer-e$e${c:+-compiled}
    timeout 90 python3 -m experiments.benchmarks.profile_layer $LAYER --experts $e $c \
      > /tmp/p/$name.log 2>&1
    echo "$name: $(grep -E '^GPU kernel time' /tmp/p/$name.log)"
  done
done | tee -a "$OUT/summary.txt"
tar czf "$OUT/profiles.tgz" -C /tmp/p .
echo "=== done ($(date +%T))"
