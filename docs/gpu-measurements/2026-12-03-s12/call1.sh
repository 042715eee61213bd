#!/usr/bin/env bash
# Twelfth session, call 1: (1) the compiled chunked loss against eager on the GPU (the test);
# (2) its A/B in a d 192, 6-layer, E16 top-1 study step (64 x 512 tokens): the whole head, chunks
# of 4,096 and of 1,024 tokens, the whole head again (a drift would show), each under
# compile_mode=default so that the profiler sees every kernel: GPU kernel time a step and held
# memory; (3) the MoE layer against dense with CUDA graphs (new rows), at issue 19's shapes and
# at the study's width.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_GPU_DATA=$PWD/.bench-data
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print(torch.__version__)"
echo "=== chunked-loss GPU test ($(date +%T))"
timeout 200 python3 -m pytest -q -n 0 -m gpu tests/models/test_gpu_backends.py -k chunked \
  -p no:cacheprovider > "$OUT/chunked_tests.log" 2>&1
tail -3 "$OUT/chunked_tests.log"
STEP="data.vocab_size=8192 model.d_model=192 model.n_layers=6 model.n_heads=6 model.d_ff=768
  model.seq_len=512 moe.num_experts=16 moe.top_k=1 train.batch_size=64 train.compile=true
  train.compile_mode=default"
mkdir -p /tmp/ab
echo "=== chunk A/B ($(date +%T))"
i=0
for c in 0 4096 1024 0; do
  i=$((i + 1))
  timeout 120 python3 -m experiments.benchmarks.run_profile --rows 30 \
    --json /tmp/ab/$i-chunk$c.json $STEP model.loss_chunk_tokens=$c > /tmp/ab/$i-chunk$c.log 2>&1
  python3 - "$c" /tmp/ab/$i-chunk$c.json <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[2]))
except Exception as e:
    print(f"chunk {sys.argv[1]}: no record ({e})"); sys.exit()
print(f"chunk {sys.argv[1]:>5}: GPU {r.get('gpu_ms_per_step', float('nan')):.2f} ms a step "
      f"({r.get('gpu_mfu', 0):.2%}), step {r['step_ms']:.2f} ms, synced {r['synced_step_ms']:.2f} ms, "
      f"first 3 steps {r['first_3_steps_s']:.1f} s, allocated {r.get('peak_allocated_gb', 0):.2f} GiB, "
      f"held {r.get('peak_reserved_gb', 0):.2f} GiB")
PY
done | tee "$OUT/chunk_ab.txt"
tar czf "$OUT/chunk_ab_profiles.tgz" -C /tmp/ab .
echo "=== MoE layer, graphed ($(date +%T))"
timeout 200 python3 -m experiments.benchmarks.moe_layer --shapes 8x1,64x1,64x8 \
  --json "$OUT/moe_layer_d1024.json" > "$OUT/moe_layer_d1024.log" 2>&1
grep -E "graphed|compiled|dense-equivalent" "$OUT/moe_layer_d1024.log"
timeout 120 python3 -m experiments.benchmarks.moe_layer --tokens 32768 --d-model 192 --ffn 768 \
  --shapes 4x1,16x1 --json "$OUT/moe_layer_d192.json" > "$OUT/moe_layer_d192.log" 2>&1
grep -E "graphed|compiled|dense-equivalent" "$OUT/moe_layer_d192.log"
echo "=== done ($(date +%T))"
