#!/usr/bin/env bash
# Fourteenth session, call 2: the attention preamble A/B (preamble_ab.py): one attention layer,
# forward and backward, compiled, at the study's d 192 (heads of 32, 64 x 512 tokens) and the
# base model's shape (d 768, heads of 64, 64 x 1024 tokens); committed and half alternated twice
# in one process each, then what rotary and QK-norm each cost.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
AB=docs/gpu-measurements/2026-12-03-s14/preamble_ab.py
python3 $AB check | tee "$OUT/summary.txt"
timeout 200 python3 $AB --tokens 32768 --seq 512 --d-model 192 --head-dim 32 > "$OUT/d192.log" 2>&1
timeout 200 python3 $AB --tokens 65536 --seq 1024 --d-model 768 --head-dim 64 > "$OUT/base.log" 2>&1
grep -h "GPU kernel time" "$OUT/d192.log" "$OUT/base.log" | tee -a "$OUT/summary.txt"
echo "=== done ($(date +%T))"
