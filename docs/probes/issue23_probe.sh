#!/usr/bin/env bash
# Replays issue 23's cases (nothing lost, nothing falsely certain) on the current tree, one line
# per case:  bash docs/probes/issue23_probe.sh   (about 3 minutes on 2 cores; a run of it:
# issue23_probe.txt). Item 13 (a GPU tolerance) is a GPU test: see docs/gpu-performance.md.
cd "$(dirname "$0")/../.."  # the repository root; run inside its environment
W=$(mktemp -d)
export MOE_SCALING_CACHE=$W/cache PYTHONUNBUFFERED=1
T="python -m experiments.train model=tiny data=sotu_bytes model.seq_len=32 train.batch_size=8"
last() { tail -n1 | cut -c1-150; }
p() { printf '%-46s | rc=%-3s | %s\n' "$1" "$2" "$3"; }
mkdir -p $W/src
python - <<PY
import json, lzma
for i in range(400):
    open(f"$W/src/{i:04d}.txt", "w").write(f"document {i} " + "some words here " * 300)
PY
# 1. two prepares into one folder
P="python -m experiments.prepare $W/src --glob *.txt --tokenizer bytes --val-fraction 0.1"
$P --out $W/ref > /dev/null 2>&1
$P --out $W/two > $W/p1.out 2>&1 & a=$!; $P --out $W/two > $W/p2.out 2>&1 & b=$!
wait $a; ra=$?; wait $b; rb=$?
same=$(cmp -s $W/ref/*/train.bin $W/two/*/train.bin && cmp -s $W/ref/*/val.bin $W/two/*/val.bin && echo identical || echo DIFFERENT)
p "1 two prepares into one --out" "$ra,$rb" "train.bin/val.bin $same to a lone prepare's"
python -c "import sys; p='$(ls -d $W/two/*)/train.bin'; d=open(p,'rb').read(); open(p,'wb').write(d[:len(d)//2])"
out=$($P --out $W/two 2>&1); p "1 rerun over a truncated train.bin" $? "$(echo "$out" | grep -m1 -E 'building again|already')"
# 2-3. tables that would make the analysis falsely certain or drop runs
python - <<PY
import numpy as np, pandas as pd, json, os
from tests.analysis.synth import sweep_table
t = sweep_table(budgets=(1e18, 1e19), sparsities=(0.0, 0.5))
pd.concat([t, t.iloc[[4]]]).to_csv("$W/dup.csv", index=False)
for col, v in (("budget_flops", np.nan), ("params_total", -1.0), ("tokens", -5e9)):
    u = t.copy(); u.loc[3, col] = v; u.to_csv(f"$W/bad_{col}.csv", index=False)
for d in ("runs/r0", "copy/r0"):
    os.makedirs(f"$W/dirs/{d}"); json.dump(t.iloc[0].to_dict(), open(f"$W/dirs/{d}/summary.json", "w"))
PY
for f in dup.csv bad_budget_flops.csv bad_params_total.csv bad_tokens.csv dirs; do
  out=$(python -m analysis.report $W/$f --out $W/rep --bootstrap 10 2>&1); p "2-3 analysis.report $f" $? "$(echo "$out" | last)"
done
# 4. SIGKILL of torchrun's rank 1
python - <<PY > $W/rank.out 2>&1
import os, signal, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, ".")
from tests.experiments.test_scaleout import _descendants
cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
       "-m", "experiments.train", "data=sotu_bytes", "model.d_model=32", "model.n_layers=2",
       "model.n_heads=2", "model.d_ff=128", "model.seq_len=32", "train.batch_size=8",
       "budget.flops=3e10", "run.checkpoint_every=10", "run.root=$W/rank"]
proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        env=dict(os.environ, OMP_NUM_THREADS="1"))
while not list(Path("$W/rank").glob("*/checkpoint.pt")): time.sleep(0.1)
time.sleep(1)
pid = [p for p in _descendants(proc.pid) if b"\0RANK=1\0" in b"\0" + Path(f"/proc/{p}/environ").read_bytes()][0]
os.kill(pid, signal.SIGKILL); print("rc", proc.wait())
PY
python - <<PY
import json, glob
s = json.load(open(glob.glob("$W/rank/*/summary.json")[0]))
print(f"{'4 SIGKILL of rank 1 (2 ranks, gloo)':<46} |        | status {s['status']}: {s['reason'][:60]}...{s['reason'][-45:]}")
PY
# 5. a truncated bin shard under the full corpus's key
cp -r $W/ref/* $W/trunc; python -c "p='$W/trunc/train.bin'; d=open(p,'rb').read(); open(p,'wb').write(d[:-4000])"
out=$($T data=bin data.path=$W/trunc data.vocab_size=256 budget.flops=1e10 run.root=$W/r5 2>&1); p "5 data=bin with a truncated train.bin" $? "$(echo "$out" | last)"
# 6. data=text identity after cp -r and touch
python - <<PY
from experiments.data.dataset import DataConfig, corpus_identity, _identities
import shutil, os
a = corpus_identity(DataConfig(source="text", path="$W/src", glob="*.txt", cache_dir="$W/cache"))
shutil.copytree("$W/src", "$W/src2"); os.utime("$W/src2/0001.txt", (1, 1)); _identities.clear()
b = corpus_identity(DataConfig(source="text", path="$W/src2", glob="*.txt", cache_dir="$W/cache"))
print(f"{'6 data=text fingerprint after cp -r + touch':<46} |        | {a} -> {b}: {'same run' if a == b else 'NEW RUN ID'}")
PY
# 7. replicate groups that match nothing
out=$(python -m experiments.sweep sweep=micro "+sweep.replicates={seeds:[1],groups:[[1e10,0.7]]}" action=plan hydra.sweep.dir=$W/sw7 2>&1); p "7 replicates.groups [[1e10, 0.7]]" $? "$(echo "$out" | last)"
# 8. SIGTERM to the sweep driver
python -m experiments.sweep sweep=micro "sweep.budgets=[3e11]" report=false hydra.sweep.dir=$W/sw8 > $W/sw8.out 2>&1 & d=$!
for i in $(seq 1 600); do ls $W/sw8/runs/*/progress.json > /dev/null 2>&1 && break; sleep 0.2; done
kill -TERM $d; wait $d; rc=$?; sleep 2
left=$(pgrep -f "hydra.sweep.dir=$W/sw8" | wc -l)
p "8 SIGTERM to the sweep driver" $rc "processes of the sweep left: $left; $(grep -c 'interrupted by SIGTERM' $W/sw8.out) run(s) saved on SIGTERM"
# 9. SLURM's USR2 warning
$T budget.flops=3e11 run.log_every=20 run.root=$W/r9 > $W/usr2.out 2>&1 & pid=$!
for i in $(seq 1 300); do grep -q "step 80/" $W/usr2.out 2>/dev/null && break; sleep 0.1; done
kill -USR2 $pid; wait $pid; rc=$?
p "9 SIGUSR2 at step ~80" $rc "$(tail -n1 $W/usr2.out | cut -c1-100)"
out=$($T budget.flops=3e11 run.log_every=20 run.root=$W/r9 2>&1); p "9 rerun after SIGUSR2" $? "$(echo "$out" | grep -m1 resuming)"
# 10. records readable by the group; locks on a filesystem without flock
ls -l $W/r9/*/summary.json | awk '{printf "%-46s |        | %s summary.json, %s\n", "10 run record permissions (umask 022)", $1, "'"$(stat -c %a $W/r9/*/run.json)"' run.json"}'
# 11. bad corpus files
mkdir -p $W/bad; printf '{"text": "a"}\n{"text": 3}\n' > $W/bad/x.jsonl
out=$(python -m experiments.prepare $W/bad --glob '*.jsonl' --tokenizer bytes --out $W/o11 2>&1); p "11 JSON line whose text is a number" $? "$(echo "$out" | grep -m1 error: | cut -c1-150)"
echo "not parquet" > $W/bad/y.parquet
out=$(python -m experiments.prepare $W/bad --glob '*.parquet' --tokenizer bytes --out $W/o11 2>&1); p "11 a .parquet that is not Parquet" $? "$(echo "$out" | last)"
mkdir -p $W/xz; python -c "import lzma; d=lzma.compress(b''.join(b'{\"text\": \"%d words\"}\n' % i for i in range(20000))); open('$W/xz/p.jsonl.xz','wb').write(d[:len(d)//2])"
out=$($T data=text data.path=$W/xz data.glob=*.xz data.tokenizer=bytes data.vocab_size=256 budget.flops=1e10 run.root=$W/r11 2>&1); rc=$?
p "11 data=text with a truncated .xz" $rc "$(echo "$out" | last | cut -c1-90) [status: $(python -c "import json,glob; print(json.load(open(glob.glob('$W/r11/*/summary.json')[0]))['status'])")]"
cp -r $W/src $W/withblob; head -c 20000 /dev/urandom | tr -d '\n' | tr '\000-\010' '\000' > $W/withblob/blob.bin
out=$(python -m experiments.prepare $W/withblob --tokenizer bytes --val-fraction 0.1 --out $W/o11b 2>&1); p "11 a binary blob in the corpus folder" $? "$(echo "$out" | grep -m1 warning | cut -c1-120)"
# 12. prepare arguments, a failing report
for a in "--vocab-size 10" "--vocab-size 0" "--vocab-size -5" "--tokenizer nothere.json" "--val-fraction 0.7"; do
  out=$(python -m experiments.prepare $W/src $a --out $W/o12 2>&1); p "12 prepare $a" $? "$(echo "$out" | last)"
done
echo "{broken" > $W/bad.json
out=$(python -m experiments.prepare $W/src --tokenizer $W/bad.json --out $W/o12 2>&1); p "12 prepare --tokenizer <corrupt file>" $? "$(echo "$out" | last | cut -c1-110)"
rm -rf $W
