#!/usr/bin/env bash
# Sixth session, call 1 (no corpus needed): where the study's MoE step spends its time at
# d 192 (a central study width), and whether a compiled top-2 router in its own graph (a graph
# break before the experts) gives the eager gradients. Writes logs and JSON under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_SCALING_CACHE=/tmp/moe-cache
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
step() { echo "=== $1 ($(date +%T))"; }
step "layer profile, compiled, d192 E16 K1 (32768 tokens: 64 x 512)"
python3 -m experiments.benchmarks.profile_layer --compile --experts 16 --top-k 1 --tokens 32768 \
  --d-model 192 --ffn 768 --rows 45 > "$OUT/profile_layer_d192_e16.log" 2>&1; tail -3 "$OUT/profile_layer_d192_e16.log"
step "training step profile, d192 E16, compile_mode=default (no CUDA graphs: every kernel seen)"
python3 -m experiments.benchmarks.run_profile --rows 45 --json "$OUT/run_profile_d192_e16.json" \
  data.vocab_size=8192 model.d_model=192 model.n_layers=6 model.n_heads=6 model.d_ff=768 \
  model.seq_len=512 moe.num_experts=16 moe.top_k=1 train.batch_size=64 train.compile=true \
  train.compile_mode=default > "$OUT/run_profile_d192_e16.log" 2>&1; grep -A2 "^data " "$OUT/run_profile_d192_e16.log"
step "compiled_grads: top-2 with the router compiled in its own graph"
python3 -m experiments.benchmarks.compiled_grads --json "$OUT/compiled_grads_own_graph.json" \
  --case top2-own-graph-default:2:default:router_own_graph \
  --case top2-own-graph-graphs:2:reduce-overhead:router_own_graph \
  > "$OUT/compiled_grads_own_graph.log" 2>&1; tail -9 "$OUT/compiled_grads_own_graph.log"
step "the regional-compile GPU test, with recompiles and graph breaks logged"
TORCH_LOGS=recompiles,graph_breaks timeout 240 python3 -m pytest -q -m gpu -s -p no:cacheprovider \
  tests/models/test_gpu_backends.py -k regional_compile > "$OUT/regional_compile.log" 2>&1
grep -v "DEBUG torch" "$OUT/regional_compile.log" | grep -i "recompil\|graph break\|passed\|failed\|assert" | head -20
step done
