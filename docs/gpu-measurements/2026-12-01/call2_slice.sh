#!/usr/bin/env bash
# Issue 19, second H200 call: the step's profile at the study shape, the base e8k1 run from
# its own summary, and the study-shaped sweep slice on a cold machine (the path users run).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/logs
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_SCALING_CACHE=/tmp/moe-cache MOE_GPU_DATA=$PWD/.study-data
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -1
t0=$(date +%s)
S="data=bin data.path=$MOE_GPU_DATA model=small moe.num_experts=16 moe.top_k=1 model.d_model=256
   model.n_layers=6 model.n_heads=8 model.d_ff=1024 model.seq_len=512 train.batch_size=64
   budget.flops=3e15 train.compile=true train.compile_mode=reduce-overhead"
echo "=== profile ($(( $(date +%s) - t0 ))s)"
TORCHINDUCTOR_CACHE_DIR=/tmp/ic-prof timeout 150 python3 -m experiments.benchmarks.run_profile \
  --json /tmp/logs/p_e16.json $S > /tmp/logs/p_e16.log 2>&1
grep -E "^data|^steady" /tmp/logs/p_e16.log; grep -A 22 "Self CPU %" /tmp/logs/p_e16.log | head -24
echo "=== base e8k1 and the study slice ($(( $(date +%s) - t0 ))s)"
timeout 400 python3 -m experiments.benchmarks.sweep_bench --slice study --configs base,default \
  --json "$OUT/sweep_bench.json" --keep /tmp/bench 2>&1 | tee /tmp/logs/sweep_bench.log
cp /tmp/bench/base_summary.json "$OUT/base_e8k1_summary.json" 2>/dev/null
tar czf "$OUT/logs.tgz" --exclude="*.bin" --exclude=compile_cache -C /tmp logs $(cd /tmp && ls -d bench 2>/dev/null)
echo "=== done ($(( $(date +%s) - t0 ))s)"
