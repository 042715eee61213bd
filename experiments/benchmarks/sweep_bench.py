"""Sweep throughput on the GPU, measured the way users run sweeps (prints a table, writes JSON).

    python -m experiments.benchmarks.sweep_bench [--slice study] [--configs default,no-mps,...]
        [--json out.json] [--keep DIR]

A *slice* is a fixed sweep spec: ``study`` (conf/sweep/study_bench.yaml, 9 runs shaped like the
second study's: 6 layers, heads of 32, d 128-256, 64 x 512 tokens a step, 3e15 FLOPs each,
E in {1, 4, 16}) or ``small`` (conf/sweep/gpu_bench.yaml, 8 runs of the first study's 4-layer
models). Each sweep configuration runs the slice through ``python -m experiments.sweep`` in a
fresh sweep folder and reads the sweep's own throughput record (sweep_log.jsonl: every run's
FLOPs by our accounting over the sweep's wall time, start-up and compilation included, x the
GPU's bf16 datasheet peak). Single-run configurations (``base``, ``base-dense``, ``d256``) run
``python -m experiments.train`` with its defaults and read the run's own summary.json. A
configuration that fails says why (the last lines of its log) instead of printing a dash.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.files import read_json
from experiments.record import SUMMARY
from experiments.sweep.sweep_dir import SweepDir

SLICES = {"study": "study_bench", "small": "gpu_bench"}
SWEEP_CONFIGS = {
    "default": ("defaults: packed, MPS, compile auto", [], []),
    "no-mps": ("packed without MPS, compile auto", ["mps=false"], []),
    "whole-model": ("packed, MPS, whole-model compile", [], ["train.compile_scope=model"]),
    "eager": ("packed, MPS, eager", [], ["train.compile=false"]),
    "max-autotune": (
        "packed, MPS, compile max-autotune (Triton GEMM templates; its MoE runs refuse it "
        "on Hopper with torch 2.11)",
        [],
        ["train.compile_mode=max-autotune"],
    ),
    "single": ("1 run at a time, compile auto", ["runs_per_gpu=1"], []),
    "megablocks": ("packed, MPS, MegaBlocks, eager", [], ["moe.backend=megablocks"]),
    "seed1": (
        "the slice's second seed, added to the default config's done sweep: its compile cache "
        "warm, each shape packed by the memory its seed-0 run held",
        ["sweep.seeds=[1]"],
        [],
    ),
}
# Configurations that launch again in another configuration's sweep folder (run it first), as
# a user adds replicates to a finished sweep.
SWEEP_FOLDER = {"seed1": "default"}
RUN_CONFIGS = {
    "base": ("model=base moe=e8k1 budget.flops=2e16", ["model=base", "moe=e8k1"], 2e16),
    "base-dense": ("model=base (dense) budget.flops=2e16", ["model=base"], 2e16),
    "d256": (
        "d256 L6 E8 K1, 64 x 1024 tokens, 3e15",
        [
            "model=small",
            "moe=e8k1",
            "model.d_model=256",
            "model.n_layers=6",
            "model.n_heads=8",
            "model.d_ff=1024",
            "model.seq_len=1024",
            "train.batch_size=64",
        ],
        3e15,
    ),
}


def _tail(text: str, lines: int = 3) -> str:
    keep = [x for x in text.strip().splitlines() if x.strip()][-lines:]
    return " | ".join(keep)[-400:]


def run_sweep_config(slice_: str, name: str, workdir: Path) -> dict:
    label, launch, train = SWEEP_CONFIGS[name]
    sweep_dir = workdir / f"{slice_}-{SWEEP_FOLDER.get(name, name)}"
    t0 = time.time()
    cmd = [
        sys.executable,
        "-m",
        "experiments.sweep",
        f"sweep={SLICES[slice_]}",
        "report=false",
        f"hydra.sweep.dir={sweep_dir}",
        *launch,
        "train_overrides=[" + ",".join(f"'{t}'" for t in train) + "]",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log = out.stdout + out.stderr
    (workdir / f"{slice_}-{name}.log").write_text(log)
    row = {
        "slice": slice_,
        "config": name,
        "label": label,
        "wall_s": time.time() - t0,
        "returncode": out.returncode,
    }
    entries = SweepDir(sweep_dir).throughput_log()
    for prefix in ("packing:", "MPS:"):
        row[prefix[:-1].lower()] = next((x for x in log.splitlines() if x.startswith(prefix)), "")
    if entries and entries[-1]["runs"]:
        e = entries[-1]
        row |= {
            "runs": e["runs"],
            "sweep_wall_s": e["wall_s"],
            "tokens_per_s": e["tokens"] / e["wall_s"],
            "aggregate_mfu": e["flops"] / (e["wall_s"] * e["gpus"] * e["peak_flops_per_gpu"]),
        }
        row["run_summaries"] = _summaries(SweepDir(sweep_dir).runs, since=t0)
    if out.returncode != 0 or not row.get("runs"):
        row["failure"] = _tail(log)
    return row


def _summaries(runs: Path, since: float) -> list[dict]:
    """Each run's own figures, of the runs this launch finished: where the sweep's time went."""
    keep = (
        *("run_id", "d_model", "num_experts", "steps", "tokens_per_s", "mfu", "time", "status"),
        *("peak_memory_gb", "peak_reserved_gb"),  # against what packing assumed for them
    )
    out = []
    for p in sorted(runs.glob(f"*/{SUMMARY}")):
        if p.stat().st_mtime < since:
            continue
        s = read_json(p) or {}
        out.append({k: s.get(k) for k in keep})
    return out


def run_single(name: str, workdir: Path) -> dict:
    label, overrides, budget = RUN_CONFIGS[name]
    root = workdir / name
    cmd = [
        sys.executable,
        "-m",
        "experiments.train",
        *overrides,
        f"budget.flops={budget}",
        "data=bin",
        f"data.path={os.environ.get('MOE_GPU_DATA', 'corpora/linux-8k')}",
        "run.log_every=50",
        f"run.root={root}",
    ]
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    (workdir / f"{name}.log").write_text(out.stdout + out.stderr)
    row = {
        "slice": "single-run",
        "config": name,
        "label": label,
        "wall_s": time.time() - t0,
        "returncode": out.returncode,
    }
    found = sorted(root.glob("*/summary.json"))
    if not found:
        return row | {"failure": _tail(out.stdout + out.stderr)}
    s = read_json(found[0]) or {}
    shutil.copy(found[0], workdir / f"{name}_summary.json")
    return row | {
        "runs": 1,
        "tokens_per_s": s["tokens_per_s"],
        "aggregate_mfu": s["mfu"],
        "time": s["time"],
        "steps": s["steps"],
        "compile": s.get("compile"),
        "peak_memory_gb": s["peak_memory_gb"],
        "peak_reserved_gb": s.get("peak_reserved_gb"),  # absent from records before 2026-12-03
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slice", default="study", choices=sorted(SLICES))
    ap.add_argument("--configs", default="default,no-mps,base")
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", default=None, help="copy the sweep folders and logs here")
    a = ap.parse_args()
    unknown = [c for c in a.configs.split(",") if c not in SWEEP_CONFIGS | RUN_CONFIGS]
    if unknown:
        ap.error(f"unknown configs {unknown}; choose from {sorted(SWEEP_CONFIGS | RUN_CONFIGS)}")
    workdir = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    rows = []
    print(f"{'slice':<10} {'config':<12} {'runs':>4} {'tokens/s':>12} {'MFU':>6} {'wall':>6}")
    for name in a.configs.split(","):
        if name in RUN_CONFIGS:
            row = run_single(name, workdir)
        else:
            row = run_sweep_config(a.slice, name, workdir)
        rows.append(row)
        mfu = f"{100 * row['aggregate_mfu']:5.1f}%" if row.get("aggregate_mfu") else "   –  "
        tps = f"{row['tokens_per_s']:>12,.0f}" if row.get("tokens_per_s") else f"{'–':>12}"
        print(
            f"{row['slice']:<10} {name:<12} {row.get('runs', 0):>4} {tps} {mfu} "
            f"{row['wall_s']:>5.0f}s {row.get('mps', '')}",
            flush=True,
        )
        if row.get("failure"):
            print(f"  failed (exit {row['returncode']}): {row['failure']}", flush=True)
        if a.json:
            Path(a.json).write_text(json.dumps(rows, indent=1))
    if a.keep:
        shutil.copytree(
            workdir,
            a.keep,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("*.pt", ".lock", "compile_cache"),
        )


if __name__ == "__main__":
    main()
