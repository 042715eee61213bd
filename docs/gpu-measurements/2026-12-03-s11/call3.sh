#!/usr/bin/env bash
# Eleventh session, call 3: (1) the fused Q, K, V projection against the three GEMMs in a study
# step, alternated twice (qkv_ab.py); (2) the slice's second seed launched on call 1's seed-0
# records (carried): packing by what they held, and MPS started for it.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_GPU_DATA=$PWD/.bench-data
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
STEP="data.vocab_size=8192 model.d_model=192 model.n_layers=6 model.n_heads=6 model.d_ff=768
  model.seq_len=512 moe.num_experts=16 moe.top_k=1 train.batch_size=64 train.compile=true"
for round in 1 2; do
  for v in one three; do
    timeout 100 python3 docs/gpu-measurements/2026-12-03-s11/qkv_ab.py $v --no-profile \
      --json "$OUT/qkv_${v}_$round.json" $STEP > /tmp/qkv_${v}_$round.log 2>&1
    echo "$v $round: $(grep '^steady' /tmp/qkv_${v}_$round.log)"
  done
done | tee "$OUT/qkv_ab.txt"
mkdir -p /tmp/bench && tar xzf .bench-runs/seed0_runs.tgz -C /tmp/bench
timeout 290 python3 -m experiments.sweep sweep=study_bench report=false \
  hydra.sweep.dir=/tmp/bench/study-default 'sweep.seeds=[1]' > "$OUT/seed1.log" 2>&1
grep -E "^(packing|MPS|throughput|sweep wall|[0-9]+ runs:)" "$OUT/seed1.log"
tar czf "$OUT/seed1_runs.tgz" --exclude='*.pt' -C /tmp/bench/study-default runs sweep_log.jsonl
