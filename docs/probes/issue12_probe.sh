#!/usr/bin/env bash
# Reruns issue 12's probes (a new user's mistakes) on the current tree, one line per probe:
#   bash docs/probes/issue12_probe.sh   (about 1 minute on 2 cores; a run of it: issue12_probe.txt)
cd "$(dirname "$0")/../.."  # the repository root; run inside its environment
W=$(mktemp -d)
export MOE_SCALING_CACHE=$W/cache
T="python -m experiments.train model=tiny data=sotu_bytes model.seq_len=32 train.batch_size=8 run.root=$W/runs"
last() { tail -n1 | cut -c1-150; }
p() { printf '%-44s | rc=%-3s | %s\n' "$1" "$2" "$3"; }
# 1. SIGINT mid-run
$T budget.flops=3e11 run.log_every=20 > $W/int.out 2>&1 & pid=$!
for i in $(seq 1 300); do grep -q "step 80/" $W/int.out 2>/dev/null && break; sleep 0.1; done
kill -INT $pid; wait $pid; rc=$?
p "1 SIGINT at step ~80" $rc "$(tail -n1 $W/int.out | cut -c1-120) [tb lines: $(grep -c Traceback $W/int.out)]"
out=$($T budget.flops=3e11 run.log_every=20 2>&1); p "1 rerun after SIGINT" $? "$(echo "$out" | grep -m1 resuming)"
for o in moe.top_k=abc moe.num_experts=4.0 model.d_model=64.0 moe.top_k=1.5 moe.renormalize=maybe train.batch_size=8.7 data=bin "model.seq_len=100000"; do
  out=$($T moe.num_experts=4 $o budget.flops=1e10 2>&1); rc=$?; p "2 $o" $rc "$(echo "$out" | last)"
done
# 4. run.dir owned by another config
$T budget.flops=1e10 run.dir=$W/owned > /dev/null 2>&1
out=$($T budget.flops=1e10 model.d_model=48 run.dir=$W/owned 2>&1); p "4 run.dir of another config" $? "$(echo "$out" | last)"
# 6. setup failure then corrected rerun
out=$($T budget.flops=1e10 run.device=cuda run.dir=$W/envfail 2>&1); p "6 run.device=cuda on CPU" $? "$(echo "$out" | last)"
out=$($T budget.flops=1e10 run.dir=$W/envfail 2>&1); p "6 corrected rerun (no retry_failed)" $? "$(echo "$out" | last)"
# 8. two identical runs at once
$T budget.flops=1e11 run.dir=$W/twice > $W/a.out 2>&1 & a=$!
sleep 2; out=$($T budget.flops=1e11 run.dir=$W/twice 2>&1); rcb=$?; wait $a
p "8 second identical run while first trains" $rcb "$(echo "$out" | last)"
python - <<PY
import json; rows=[json.loads(l) for l in open("$W/twice/metrics.jsonl")]; s=[r["step"] for r in rows]
print(f"{'8 metrics rows after both':<44} |        | {len(s)} rows, ordered={s==sorted(s)}, unique={len(set(s))==len(s)}")
PY
echo "garbage{" >> $W/twice/metrics.jsonl
out=$($T budget.flops=1e11 run.dir=$W/twice 2>&1); p "8 garbage line in metrics, rerun" $? "$(echo "$out" | last)"
# 7. bad tables
python - <<PY
import pandas as pd, numpy as np
from tests.analysis.synth import sweep_table
t = sweep_table(); t.loc[3, "val_loss"] = np.inf; t.to_csv("$W/inf.csv", index=False)
open("$W/empty.csv", "w").close()
sweep_table().drop(columns=["tokens"]).to_csv("$W/nocol.csv", index=False)
PY
for f in inf.csv empty.csv missing.csv nocol.csv; do
  out=$(python -m analysis.report $W/$f --bootstrap 10 2>&1); p "7 analysis.report $f" $? "$(echo "$out" | last)"
done
out=$(python -m analysis.compare $W/inf.csv $W/empty.csv 2>&1); p "7 analysis.compare bad tables" $? "$(echo "$out" | last)"
# 10. unsafe sweep name, --help default out
out=$(python -m experiments.sweep sweep=micro sweep.name=../x action=plan 2>&1); p "10 sweep.name=../x" $? "$(echo "$out" | last)"
p "10 report --help --out" 0 "$(python -m analysis.report --help | grep -A1 -- '--out OUT ' | tr -s ' ' | tr '\n' ' ' | cut -c1-140)"
