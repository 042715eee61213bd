#!/usr/bin/env bash
# Where the second study's gate arm breaks on the GPU (docs/studies/study2/STATUS.md): its first
# training step, repeated from the same weights and batch (experiments.benchmarks.first_step,
# --by-param: the largest per-parameter gradient norms and each layer's expert loads), as
# trained and with one thing changed at a time. Run after device_run.sh has installed the
# wheels; each case writes <case>.json and <case>.log under $PROBE_DIR, tarred into
# $OUT/gate_arm_probe.tgz. Data: $PROBE_DATA overrides (default: the embedded corpus, bytes).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_SCALING_CACHE=${MOE_SCALING_CACHE:-/tmp/moe-cache}
OUT=${OUT:-/tmp/out}
dir=${PROBE_DIR:-/tmp/gate_arm_probe}
mkdir -p "$dir" "$OUT"
data=${PROBE_DATA:-data=sotu_bytes}
# the gate arm at d 160 as conf/sweep/study2.yaml trains it (6e15, the broken run 23acb3625702)
arm="model.seq_len=512 train.batch_size=64 optim.lr=2e-3 optim.betas=[0.9,0.99]
  optim.warmup_steps=200 model.d_model=160 model.n_layers=6 model.n_heads=5 model.d_ff=640
  budget.flops=6e15 moe.num_experts=16"
declare -A cases=(
  [gate]="moe.top_k=1 moe.granularity=2 moe.renormalize=true"
  [gate_no_graphs]="moe.top_k=1 moe.granularity=2 moe.renormalize=true train.compile=true
    train.compile_mode=default"
  [gate_eager]="moe.top_k=1 moe.granularity=2 moe.renormalize=true train.compile=false"
  [gate_torch_backend]="moe.top_k=1 moe.granularity=2 moe.renormalize=true moe.backend=torch"
  [e32_top1]="moe.num_experts=32 moe.top_k=1"
  [e16_top2]="moe.top_k=2 moe.renormalize=true"
  [e16_top1]="moe.top_k=1"
)
order=${PROBE_CASES:-gate gate_eager gate_no_graphs e32_top1 e16_top2 gate_torch_backend e16_top1}
for case in $order; do
  echo "=== probe $case ($(date +%T))"
  # shellcheck disable=SC2086  # the overrides are words
  timeout "${PROBE_TIMEOUT:-150}" python3 -m experiments.benchmarks.first_step --repeats 3 \
    --by-param 6 --json "$dir/$case.json" $data $arm ${cases[$case]} > "$dir/$case.log" 2>&1
  echo "exit $?"
  grep -v "DEBUG torch" "$dir/$case.log" | tail -12
  tar czf "$OUT/gate_arm_probe.tgz" -C "$dir" .  # after every case: a call cut short keeps it
done
