#!/usr/bin/env bash
# Eleventh session, call 1 (a cold machine): the study slice's sweep benchmark, then the slice's
# second seed launched into the same sweep folder (the compile cache warm, each shape packed by
# what its seed-0 run held), on the first 50M tokens of study 2's corpus (.bench-data, carried;
# made by `python -m experiments.benchmarks.bench_corpus <study 2's corpus> .bench-data`).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export MOE_GPU_DATA=$PWD/.bench-data
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
# the sweep's GPU count: a GPU host answers through torch (nvidia_driver_present is true there)
python3 -c "from experiments.sweep.launch import gpus, nvidia_driver_present as p; print('nvidia driver present:', p(), '| gpus():', gpus())" | tee "$OUT/gpus.txt"
timeout 570 bash experiments/benchmarks/device_run.sh bench:default,seed1
