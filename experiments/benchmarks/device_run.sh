#!/usr/bin/env bash
# One call on the GPU machine (it starts bare): install the carried wheels and corpus, then run
# the steps named, each writing under $OUT (what comes back):
#   tests[:<path>]    the GPU tests (pytest -m gpu), all or those under <path>
#   bench:<configs>   experiments.benchmarks.sweep_bench --slice study with those configs
#                     (default, no-mps, whole-model, eager, max-autotune, single, megablocks,
#                     seed1, base, d256, ...), on the corpus at $MOE_GPU_DATA: one that fits a
#                     call is made by experiments/benchmarks/bench_corpus.py (carry its folder)
#   multigpu          issue 15 on a host of 2+ GPUs: the 2-GPU tests, data-parallel scaling
#                     (base e8k1 and E=64 K=8, same batch per GPU), the loss curve at one
#                     global batch, expert vs data parallel at E=64 and E=256
#                     (experiments.benchmarks.scaling, JSON under $OUT); add bench:default
#                     for the sweep's aggregate MFU over all the host's GPUs
#   study:<seconds>   the GPU study sweep, resumed from the committed run records in
#                     docs/studies/kernel/runs, stopped (as Ctrl-C stops it) after <seconds>;
#                     its run records come back as $OUT/study_runs.tgz, to be committed
#                     ($STUDY_ARGS: extra sweep overrides, e.g. "sweep.budgets=[6e13,1.9e14]").
#   pieces:<dir>:<name>  a corpus too large for one call (64 MiB), sent in pieces over consecutive
#                     calls while the machine stays warm: the carried <dir> holds some of its
#                     files and PIECES (the sha256 of the whole file, then its parts in order);
#                     they gather in /tmp/pieces/<name>, and once every part is there they are
#                     joined, checked and MOE_GPU_DATA points at the corpus for the later steps.
#   sweep:<spec>:<seconds>  the sweep conf/sweep/<spec>.yaml, resumed from the run records in
#                     $STUDY_DIR/runs when it is set (e.g. docs/studies/study2/pilot), stopped
#                     after <seconds>; its records come back as $OUT/<spec>_runs.tgz.
# Carry: .gpu-wheels (MegaBlocks, Hydra and its joblib launcher) and .study-data (the tokenized
# corpus, xz-compressed: experiments/corpora/debian_kernel.py, then experiments.prepare --xz).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD MOE_SCALING_CACHE=/tmp/moe-cache
export MOE_GPU_DATA=${MOE_GPU_DATA:-$PWD/.study-data}
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
# timed_sweep SPEC DIR SECONDS NAME: the sweep conf/sweep/SPEC.yaml in DIR, stopped (as Ctrl-C
# stops it) after SECONDS; its log is $OUT/NAME.log, its run records $OUT/NAME_runs.tgz.
timed_sweep() {
  local spec=$1 dir=$2 seconds=$3 name=$4
  setsid python3 -m experiments.sweep sweep="$spec" hydra.sweep.dir="$dir" report=false \
    ${STUDY_ARGS:-} > "$OUT/$name.log" 2>&1 &
  local pid=$!
  # The timer's sleep is killed with it and writes nowhere: an orphaned sleep holding this
  # script's stdout kept a piped call (| tail) waiting to the timer's end (2026-12-02: 390 s).
  ( trap 'kill $nap 2>/dev/null; exit' TERM; sleep "$seconds" & nap=$!; wait $nap
    kill -INT -- "-$pid" 2>/dev/null ) >/dev/null 2>&1 &
  local timer=$!
  # The driver prints "sweep wall time" when it is done; should it not have exited 30 s later,
  # it is killed (a guard: the one such wait seen was this timer's sleep, fixed above).
  local done_at=
  while kill -0 "$pid" 2>/dev/null; do
    if [[ -z $done_at ]] && grep -q "^sweep wall time" "$OUT/$name.log" 2>/dev/null; then done_at=$SECONDS; fi
    if [[ -n $done_at ]] && (( SECONDS - done_at > 30 )); then
      echo "the sweep driver had not exited 30 s after it finished: killed" | tee -a "$OUT/$name.log"
      kill -KILL -- "-$pid" 2>/dev/null
    fi
    sleep 2
  done
  wait "$pid"
  kill "$timer" 2>/dev/null
  tail -25 "$OUT/$name.log"
  # records only: no checkpoints, locks or half-written temporaries (hundreds of MB each)
  tar czf "$OUT/${name}_runs.tgz" --exclude='*.pt' --exclude='.lock' --exclude='.*.tmp' \
    -C "$dir" runs $(cd "$dir" && ls sweep_log.jsonl lr_rule.json plan.json 2>/dev/null)
  # a file over 16 MiB does not come back: send it in parts (cat them to rejoin)
  if (( $(stat -c %s "$OUT/${name}_runs.tgz") > 15 * 2**20 )); then
    split -b 15M -d "$OUT/${name}_runs.tgz" "$OUT/${name}_runs.tgz." && rm "$OUT/${name}_runs.tgz"
  fi
}

for step in "$@"; do
  echo "=== $step ($(date +%T))"
  case $step in
    tests|tests:*)
      target=tests; [[ $step == tests:* ]] && target=${step#tests:}
      python3 -m pytest -q -n 0 -m gpu $target -p no:cacheprovider 2>&1 | tee -a "$OUT/gpu_tests.log" \
        | tail -30 ;;
    bench:*)
      python3 -m experiments.benchmarks.sweep_bench --configs "${step#bench:}" \
        --json "$OUT/sweep_bench.json" --keep /tmp/bench 2>&1 | tee -a "$OUT/sweep_bench.log"
      tar czf "$OUT/bench_logs.tgz" -C /tmp/bench --exclude='*.bin' . 2>/dev/null ;;
    multigpu)
      n=$(nvidia-smi -L | wc -l)
      python3 -m pytest -q -n 0 -m gpu tests/experiments/test_scaleout.py -p no:cacheprovider 2>&1 \
        | tee -a "$OUT/gpu_tests.log" | tail -5
      scale() { python3 -m experiments.benchmarks.scaling --steps 300 "$@" 2>&1 | tail -8; }
      for moe in "moe=e8k1" "moe=e64k8"; do
        scale --json "$OUT/scaling_${moe#moe=}.json" --case 1gpu:1:train.batch_size=32 \
          --case ${n}gpu:$n:train.batch_size=$((32 * n)) \
          --case ${n}gpu-same-batch:$n:train.batch_size=32 \
          -- model=base $moe budget.flops=1e18 | tee -a "$OUT/scaling.log"
      done
      for e in 64 256; do
        scale --json "$OUT/ep_e$e.json" --case dp:2:train.batch_size=64 \
          --case ep:2:train.batch_size=64,moe.expert_parallel=2 \
          -- model=base moe=e64k8 moe.num_experts=$e moe.backend=native budget.flops=1e18 \
          | tee -a "$OUT/scaling.log"
      done ;;
    study:*)
      mkdir -p sweeps/gpu/runs
      cp -r docs/studies/kernel/runs/. sweeps/gpu/runs/ 2>/dev/null || true
      cp docs/studies/kernel/lr_rule.json sweeps/gpu/ 2>/dev/null || true  # the LRs, exactly
      timed_sweep gpu sweeps/gpu "${step#study:}" study ;;
    pieces:*)
      src=${step#pieces:}; name=${src#*:}; src=${src%%:*}; dst=/tmp/pieces/$name
      mkdir -p "$dst" && cp -r "$src/." "$dst/"
      ( cd "$dst" || exit 1
        read -r sum whole < PIECES
        parts=$(tail -n +2 PIECES)
        if [[ -f $whole ]] && ! ls $parts >/dev/null 2>&1; then rm -f $parts; echo "$name: $whole is here"
        elif missing=$(for p in $parts; do [[ -f $p ]] || echo "$p"; done); [[ -n $missing ]]; then
          echo "$name: waiting for" $missing; exit 1
        else
          cat $parts > "$whole.tmp" && echo "$sum  $whole.tmp" | sha256sum -c --quiet \
            && mv "$whole.tmp" "$whole" && rm -f $parts && echo "$name: $whole joined, sha256 ok"
        fi ) && export MOE_GPU_DATA=$dst
      echo "MOE_GPU_DATA=$MOE_GPU_DATA" ;;
    sweep:*)
      spec=${step#sweep:}; seconds=${spec#*:}; spec=${spec%%:*}
      mkdir -p "sweeps/$spec/runs"
      [[ -n ${STUDY_DIR:-} && -d $STUDY_DIR/runs ]] && cp -r "$STUDY_DIR/runs/." "sweeps/$spec/runs/"
      timed_sweep "$spec" "sweeps/$spec" "$seconds" "$spec" ;;
  esac
done
