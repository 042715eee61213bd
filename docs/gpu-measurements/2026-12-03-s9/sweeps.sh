#!/usr/bin/env bash
# Ninth session, a sweep call: study 2's last runs at 6e15 from three sweep drivers side by side
# on one GPU, each asking for all 8 slots (the slot locks are shared, so together they pack 8),
# under one MPS daemon started here (each driver finds it running and leaves it). Started in the
# order of what the plan's reading needs first, a few seconds apart, so the first slots go to it:
#   1. the LR check at 6e15 (conf/sweep/study2_lr.yaml: 6 runs, a condition of the verdict);
#   2. E32 (conf/sweep/study2_e32.yaml: 6 runs, the issue's design);
#   3. the gate arm's 5 left at 6e15 (conf/sweep/study2.yaml, variant g2renorm).
#   bash sweeps.sh SECONDS [PIECES_DIR] [FINISH_WITHIN]
# PIECES_DIR: the corpus's last part, carried in this call. FINISH_WITHIN: launch only the runs
# whose measured pace finishes them in time (each driver counts 8 slots of its own: an estimate).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
seconds=$1 pieces=${2:-} finish=${3:-}
run=experiments/benchmarks/device_run.sh
export MOE_GPU_DATA=/tmp/pieces/study2
[[ -n $pieces ]] && bash $run "pieces:$pieces:study2"
ls $MOE_GPU_DATA/train.bin* >/dev/null 2>&1 || { echo "no corpus at $MOE_GPU_DATA"; exit 1; }
export CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps
[[ -e $CUDA_MPS_PIPE_DIRECTORY/control ]] || nvidia-cuda-mps-control -d || echo "MPS: could not start"
extra="runs_per_gpu=${SLOTS:-7}${finish:+ finish_within=$finish}"
# the gate arm resumes from the study's committed records (it is the study's own sweep); the
# other two have runs of their own only, kept on this machine between calls
first_call=; [[ -n $pieces ]] && first_call=1
touch /tmp/call_start
STUDY_ARGS="budgets=[6e15] $extra" bash $run "sweep:study2_lr:$seconds" >> "$OUT/drivers.txt" 2>&1 &
sleep 20
STUDY_ARGS="$extra" bash $run "sweep:study2_e32:$((seconds - 20))" >> "$OUT/drivers.txt" 2>&1 &
sleep 20
STUDY_DIR=${first_call:+docs/studies/study2} STUDY_ARGS="variants=[g2renorm] budgets=[6e15] $extra" \
  bash $run "sweep:study2:$((seconds - 40))" >> "$OUT/drivers.txt" 2>&1 &
wait
for f in study2_lr study2_e32 study2; do
  echo "== $f"; grep -v "DEBUG torch" "$OUT/$f.log" | grep -E "^(packing|MPS|throughput|sweep wall|[0-9]+ runs:|deadline)" | tail -6
done
# the gradient norms of each run trained here: a new kind of run is checked before it is trusted
for d in sweeps/study2_lr/runs/* sweeps/study2_e32/runs/* sweeps/study2/runs/*; do
  [[ $d/metrics.jsonl -nt /tmp/call_start ]] || continue
  python3 - "$d" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
g = [json.loads(l).get("grad_norm") for l in open(d / "metrics.jsonl")]
g = [x for x in g if x is not None]
if g:
    s = json.load(open(d / "summary.json")) if (d / "summary.json").exists() else {}
    print(f"{d.name} E{s.get('num_experts')} K{s.get('top_k')} d{s.get('d_model')} lr{s.get('lr')} {s.get('variant')} {s.get('status')}: {len(g)} logged steps, grad_norm max {max(g):.3g}, last {g[-1]:.3g}")
PY
done | sort -u > "$OUT/grad_norms.txt"; tail -20 "$OUT/grad_norms.txt"
# At most 8 files come back from a call (the device's limit): the third sweep's records were
# left out of call 4 that way (9 files). Past 8, the logs travel as one archive.
if (( $(ls "$OUT" | wc -l) > 8 )); then
  (cd "$OUT" && tar czf logs.tgz *.log *.txt && rm -f *.log drivers.txt grad_norms.txt)
fi
ls "$OUT"
