#!/usr/bin/env bash
# Fifteenth session, call 4: the d256 single run as sweep_bench launches it (E8 K1, 6 layers,
# 64 x 1024 tokens, 3e15, defaults), the compile workers started early (committed) or late
# (pool_ab.py), alternated; each run with an empty compile cache of its own (cold). Each run's
# own summary.json is the figure.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -m pip install -q --no-deps --no-index .gpu-wheels/*.whl 2>&1 | tail -2
AB=docs/gpu-measurements/2026-12-03-s15/pool_ab.py
D256="model=small moe=e8k1 model.d_model=256 model.n_layers=6 model.n_heads=8 model.d_ff=1024
  model.seq_len=1024 train.batch_size=64 budget.flops=3e15 data=bin data.path=$PWD/.bench-data
  run.log_every=50"
i=0
for v in late early late early late early; do
  (( SECONDS > 300 )) && break  # another pair would not fit the call
  i=$((i + 1))
  TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) timeout 100 python3 $AB $v $D256 run.root=/tmp/ab/$i-$v \
    > "$OUT/d256-$i-$v.log" 2>&1
  python3 - "$i" "$v" <<'PY' | tee -a "$OUT/summary.txt"
import glob, json, sys
i, v = sys.argv[1:]
found = glob.glob(f"/tmp/ab/{i}-{v}/*/summary.json")
if not found:
    print(f"{i} {v}: no summary")
    raise SystemExit
s = json.load(open(found[0])); t = s["time"]
print(f"{i} {v}: mfu {s['mfu']:.4f} wall {s['wall_time_s']:.1f} setup {t['setup_s']:.1f} "
      f"warmup {t['warmup_s']:.1f} train {t['train_s']:.1f} eval {t['eval_s']:.1f}")
PY
done
tar czf "$OUT/d256_logs.tgz" -C "$OUT" $(cd "$OUT" && ls d256-*.log) && rm "$OUT"/d256-*.log
echo "=== done ($(date +%T))"
