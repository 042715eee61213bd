#!/usr/bin/env bash
# Issue 19, first H200 call: where a study-shaped run's warm-up goes, whole-model vs regional
# compilation, cold caches vs a cache carried to a fresh path; the MoE layer compiled.
# Carry .gpu-wheels and .study-data; run from the repository root.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_SCALING_CACHE=/tmp/moe-cache MOE_GPU_DATA=$PWD/.study-data
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
t0=$(date +%s)
echo "=== GPU backend tests"
timeout 150 python3 -m pytest -q -m gpu tests/models -p no:cacheprovider 2>&1 | tail -3 | tee "$OUT/tests_models.log"
S="data=bin data.path=$MOE_GPU_DATA model=small moe.num_experts=16 moe.top_k=1 model.d_model=256
   model.n_layers=6 model.n_heads=8 model.d_ff=1024 model.seq_len=512 train.batch_size=64
   budget.flops=3e15 train.compile=true"
prof() {  # label, cache dir, args...
  local label=$1 cache=$2; shift 2
  echo "=== profile $label ($(( $(date +%s) - t0 ))s)"
  TORCHINDUCTOR_CACHE_DIR=$cache timeout 170 python3 -m experiments.benchmarks.run_profile \
    --json "$OUT/p_$label.json" "$@" > "$OUT/p_$label.log" 2>&1
  grep -E "^data|^steady" "$OUT/p_$label.log" || tail -3 "$OUT/p_$label.log"
}
prof whole-graphs /tmp/ic-whole --no-profile $S train.compile_scope=model train.compile_mode=reduce-overhead
prof blocks-graphs /tmp/ic-blocks $S train.compile_scope=blocks train.compile_mode=reduce-overhead
cp -r /tmp/ic-blocks /tmp/ic-carried   # a fresh machine that received the sweep's cache folder
prof blocks-graphs-carried /tmp/ic-carried --no-profile $S train.compile_scope=blocks train.compile_mode=reduce-overhead
prof blocks-default /tmp/ic-bdef --no-profile $S train.compile_scope=blocks train.compile_mode=default
prof dense-blocks-graphs /tmp/ic-dense --no-profile $S moe.num_experts=1 train.compile_scope=blocks train.compile_mode=reduce-overhead
echo "=== moe layer ($(( $(date +%s) - t0 ))s)"
timeout 150 python3 -m experiments.benchmarks.moe_layer --shapes 8x1,64x1,64x8 --json "$OUT/moe_layer.json" 2>&1 | tail -22
B="model=base moe=e8k1 budget.flops=2e16 data=bin data.path=$MOE_GPU_DATA train.compile=true"
prof base-blocks /tmp/ic-base --no-profile $B train.compile_scope=blocks
prof base-blocks-graphs /tmp/ic-base-g --no-profile $B train.compile_scope=blocks train.compile_mode=reduce-overhead
echo "=== done ($(( $(date +%s) - t0 ))s)"
