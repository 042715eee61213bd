#!/usr/bin/env bash
# Seventh session, a sweep call: two sweeps of study 2 side by side on one GPU, packed 2 + 6 (the
# 8 slots one sweep packs alone), under one MPS daemon started here (each driver then finds it
# running and leaves it): the LR check at 6e15 (conf/sweep/study2_lr.yaml, both arms, 6 runs)
# and the gate arm's runs left (conf/sweep/study2.yaml, variant g2renorm: 12 at 6e15, 5 at 3e15).
#   bash sweeps.sh SECONDS [PIECES_DIR] [FINISH_WITHIN]
# PIECES_DIR: the corpus's last part, carried in this call (the sweeps start from the committed
# run records then). FINISH_WITHIN: launch only the runs whose measured pace finishes them in time.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
seconds=$1 pieces=${2:-} finish=${3:-}
run=experiments/benchmarks/device_run.sh
export MOE_GPU_DATA=/tmp/pieces/study2
study_dir=
if [[ -n $pieces ]]; then bash $run "pieces:$pieces:study2"; study_dir=docs/studies/study2; fi
ls $MOE_GPU_DATA/train.bin* >/dev/null 2>&1 || { echo "no corpus at $MOE_GPU_DATA"; exit 1; }
export CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps
[[ -e $CUDA_MPS_PIPE_DIRECTORY/control ]] || nvidia-cuda-mps-control -d || echo "MPS: could not start"
extra=${finish:+finish_within=$finish}
STUDY_DIR=$study_dir STUDY_ARGS="budgets=[6e15] runs_per_gpu=2 $extra" \
  bash $run "sweep:study2_lr:$seconds" >> "$OUT/drivers.txt" 2>&1 &
STUDY_DIR=$study_dir STUDY_ARGS="variants=[g2renorm] runs_per_gpu=6 $extra" \
  bash $run "sweep:study2:$seconds" >> "$OUT/drivers.txt" 2>&1 &
wait
for f in study2_lr study2; do
  echo "== $f"; grep -v "DEBUG torch" "$OUT/$f.log" | grep -E "^(packing|MPS|throughput|sweep wall|[0-9]+ runs:)" | tail -6
done
