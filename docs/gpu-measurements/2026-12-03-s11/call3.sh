#!/usr/bin/env bash
# Eleventh session, call 3: (1) what a CUDA process holds outside its caching allocator (the
# context packing adds to each run's measured peak); (2) the fused Q, K, V projection against
# the three GEMMs in a study step, one, three, one (qkv_ab.py); (3) the slice's second seed
# launched on call 1's seed-0 records (carried): packing by what they held, MPS started for it,
# stopped (as Ctrl-C stops it) after 170 s.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_GPU_DATA=$PWD/.bench-data
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
python3 - <<'PY' 2>&1 | tee "$OUT/context.txt"
import torch
a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
(a @ a).sum().item()  # cuBLAS initialised, as in a run
torch.cuda.synchronize()
held = torch.cuda.memory_reserved()
free, total = torch.cuda.mem_get_info()  # the only process on the GPU: its use is the GPU's
print(f"allocator holds {held / 2**30:.2f} GiB; GPU in use {(total - free) / 2**30:.2f} GiB; "
      f"outside the allocator {(total - free - held) / 2**30:.2f} GiB")
PY
STEP="data.vocab_size=8192 model.d_model=192 model.n_layers=6 model.n_heads=6 model.d_ff=768
  model.seq_len=512 moe.num_experts=16 moe.top_k=1 train.batch_size=64 train.compile=true"
for v in one three one; do  # the committed model first and last: a drift would show
  timeout 80 python3 docs/gpu-measurements/2026-12-03-s11/qkv_ab.py $v --no-profile \
    --json /tmp/qkv.json $STEP > /tmp/qkv.log 2>&1
  echo "$v: $(grep '^steady' /tmp/qkv.log) | $(cat /tmp/qkv.json)" | tr -s ' \n' ' '; echo
done | tee "$OUT/qkv_ab.txt"
mkdir -p /tmp/bench && tar xzf .bench-runs/seed0_runs.tgz -C /tmp/bench
timeout -s INT 170 python3 -m experiments.sweep sweep=study_bench report=false \
  hydra.sweep.dir=/tmp/bench/study-default 'sweep.seeds=[1]' > "$OUT/seed1.log" 2>&1
grep -E "^(packing|MPS|throughput|sweep wall|[0-9]+ runs:)" "$OUT/seed1.log"
tar czf "$OUT/seed1_runs.tgz" --exclude='*.pt' -C /tmp/bench/study-default runs sweep_log.jsonl
